//! `sluice serve`: the runtime as a service. It opens the data directory (restoring every
//! pipeline deployed before, running or paused), applies the pipelines declared in its config
//! file, serves the admin API, and on Ctrl-C or SIGTERM stops every pipeline cleanly
//! (finishing or abandoning in-flight batches, committing what was processed).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;

use sluice_admin::listener::{HEADER_READ_TIMEOUT, MAX_CONNECTIONS, MAX_CONNECTIONS_CAP};
use sluice_admin::{self as admin, AdminConfig, ConnectionLimits, REQUEST_TIMEOUT, check_listen_address};
use sluice_engine::Limits;
use sluice_kafka::KafkaConfig;
use sluice_pipeline::cluster::ClusterConfig;
use sluice_pipeline::manager::{Declared, ManagerConfig, PipelineManager};
use sluice_pipeline::registry::module_digest;
use sluice_pipeline::registry::pipelines::DEFAULT_KEEP_VERSIONS;
use sluice_pipeline::spec::PipelineSpec;

/// The admin API's default address: loopback only.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:7070";

/// The longest a shutdown may take, from the signal to the process exit. Pipelines stop
/// within [`sluice_pipeline::STOP_ACK_GRACE`] + [`sluice_pipeline::STOP_COMMIT_TIMEOUT`] +
/// [`sluice_pipeline::STOP_FLUSH_TIMEOUT`] (15 s) even with the cluster gone; past this
/// deadline the process exits anyway (status 1), and what was not committed is processed
/// again after the restart.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// A config file for `sluice serve` (TOML).
///
/// ```toml
/// data_dir = "sluice-data"          # modules, compiled artifacts, pipelines; default ./sluice-data
/// # node_id = "node-a"              # default: made once and kept in <data_dir>/node-id
///
/// [kafka]
/// brokers = "127.0.0.1:9092"
/// properties = { "security.protocol" = "ssl" }   # passed through to librdkafka
///
/// [admin]
/// listen = "127.0.0.1:7070"         # the default; another address needs a token
/// # Tokens are best given by environment: SLUICE_ADMIN_TOKEN, SLUICE_READ_TOKEN.
/// request_timeout_secs = 120        # a call, body included (1 to 3,600)
/// header_read_timeout_secs = 10     # a request head; also the idle keep-alive limit (1 to 600)
/// max_connections = 256             # open at once (1 to 65,536)
///
/// [engine]                          # limits of every function instance (docs/limits.md)
/// max_memory_mib = 64               # linear memory per instance (1 to 4,096)
/// max_cpu_ms_per_call = 2000        # guest CPU time per call (10 to 3,600,000)
/// call_timeout_ms = 10000           # wall clock per call, host calls included (10 to 3,600,000)
/// max_module_mib = 32               # largest module accepted (1 to 1,024)
///
/// [[pipeline]]                      # optional: pipelines can also be deployed over the API
/// name = "word-count"
/// inputs = ["sentences"]
/// outputs = { default = "word-counts" }
/// module = "target/wasm32-wasip2/release/word_count.wasm"
/// cache = "memory://"
/// processing = { batch_size = 500, on_failure = "dead-letter" }
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Where modules, compiled artifacts and pipelines are kept between restarts.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The cluster.
    pub kafka: KafkaConfig,
    /// The admin API.
    #[serde(default)]
    pub admin: AdminSettings,
    /// The limits of modules and function instances.
    #[serde(default)]
    pub engine: EngineSettings,
    /// Module versions kept per pipeline for rollback, the current one included: 1 to
    /// [`MAX_KEEP_VERSIONS`]. Default 10.
    #[serde(default = "default_keep_versions")]
    pub keep_versions: usize,
    /// Pipelines to create or update at start-up; their `module` is a file path (relative
    /// to the config file's folder), stored in the registry at start-up and applied as its
    /// digest. A declaration is applied when it is new or changed since it was last applied;
    /// otherwise the stored state (which may have been changed over the API) wins.
    #[serde(default, rename = "pipeline")]
    pub pipelines: Vec<PipelineSpec<PathBuf>>,
    /// This runtime's node id: its pipelines' static member name in their consumer groups.
    /// Default: made once and kept in `<data_dir>/node-id`.
    #[serde(default)]
    pub node_id: Option<String>,
    /// Where the registry (pipelines, module versions, modules) is kept: `kafka` (the
    /// default), in the cluster's control topics, shared by every runtime started on them,
    /// or `data-dir`, in this runtime's data directory alone (see docs/cluster.md).
    #[serde(default)]
    pub registry: RegistryPlace,
    /// The control topics and timings of the registry in Kafka (the `[cluster]` table).
    #[serde(default)]
    pub cluster: ClusterConfig,
}

/// Where `sluice serve` keeps its registry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum RegistryPlace {
    /// In the cluster's control topics: every runtime started on them runs the same pipelines.
    #[default]
    Kafka,
    /// In this runtime's data directory, for this runtime alone.
    DataDir,
}

/// The `[admin]` table.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// The address the API listens on. Default [`DEFAULT_ADMIN_LISTEN`].
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The token for read-only calls (or `SLUICE_READ_TOKEN`).
    pub read_token: Option<String>,
    /// The token for every call (or `SLUICE_ADMIN_TOKEN`).
    pub admin_token: Option<String>,
    /// The longest a call may take, in seconds: 1 to [`MAX_TIMEOUT_SECS`]. Default 120.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    /// The longest a client may take to send a request head, in seconds, from the connection's
    /// opening or the previous answer (so also the idle keep-alive limit): 1 to
    /// [`MAX_HEADER_READ_TIMEOUT_SECS`]. Default 10.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout_secs: u64,
    /// The most connections open at once: 1 to 65,536. Default 256.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

/// The highest `request_timeout_secs`: an hour.
pub const MAX_TIMEOUT_SECS: u64 = 3_600;
/// The highest `header_read_timeout_secs`: ten minutes.
pub const MAX_HEADER_READ_TIMEOUT_SECS: u64 = 600;

impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the tokens themselves.
        f.debug_struct("AdminSettings")
            .field("listen", &self.listen)
            .field("read_token", &self.read_token.as_ref().map(|_| "<set>"))
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<set>"))
            .field("request_timeout_secs", &self.request_timeout_secs)
            .field("header_read_timeout_secs", &self.header_read_timeout_secs)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            listen: default_listen(),
            read_token: None,
            admin_token: None,
            request_timeout_secs: default_request_timeout(),
            header_read_timeout_secs: default_header_read_timeout(),
            max_connections: default_max_connections(),
        }
    }
}

impl AdminSettings {
    /// The API's config, with tokens from the environment when the file sets none.
    pub fn config(&self) -> AdminConfig {
        let env = |name: &str| std::env::var(name).ok().filter(|t| !t.is_empty());
        AdminConfig {
            read_token: self.read_token.clone().or_else(|| env("SLUICE_READ_TOKEN")),
            admin_token: self.admin_token.clone().or_else(|| env("SLUICE_ADMIN_TOKEN")),
            request_timeout: Duration::from_secs(self.request_timeout_secs),
        }
    }

    /// The limits on the API's connections.
    pub fn connection_limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs),
            max_connections: self.max_connections,
        }
    }

    /// Checks that every number is in its range.
    pub fn validate(&self) -> Result<(), String> {
        let check = |name: &str, value: u64, max: u64| {
            if (1..=max).contains(&value) {
                Ok(())
            } else {
                Err(format!("[admin] {name} = {value} is out of range: use a whole number from 1 to {max}"))
            }
        };
        check("request_timeout_secs", self.request_timeout_secs, MAX_TIMEOUT_SECS)?;
        check("header_read_timeout_secs", self.header_read_timeout_secs, MAX_HEADER_READ_TIMEOUT_SECS)?;
        check("max_connections", self.max_connections as u64, MAX_CONNECTIONS_CAP as u64)
    }
}

/// The `[engine]` table: the limits an operator sets on modules and function instances
/// ([`Limits`]), in whole units named by each key. Every key has the default of
/// [`Limits::default`] and a range checked at start-up ([`EngineSettings::validate`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSettings {
    /// [`Limits::max_module_bytes`], in MiB: 1 to [`MAX_MODULE_MIB`]. Default 32.
    pub max_module_mib: u64,
    /// [`Limits::max_memory_bytes`], in MiB: 1 to [`MAX_MEMORY_MIB`] (all a 32-bit memory can
    /// address). Default 64.
    pub max_memory_mib: u64,
    /// [`Limits::max_cpu_per_call`], in milliseconds: [`MIN_CALL_MS`] (one epoch tick) to
    /// [`MAX_CALL_MS`]. Default 2,000.
    pub max_cpu_ms_per_call: u64,
    /// [`Limits::call_timeout`], in milliseconds: [`MIN_CALL_MS`] to [`MAX_CALL_MS`].
    /// Default 10,000.
    pub call_timeout_ms: u64,
    /// [`Limits::max_outputs_per_batch`]: 1 to [`MAX_OUTPUTS_PER_BATCH`]. Default 250,000.
    pub max_outputs_per_batch: u64,
    /// [`Limits::max_output_bytes_per_batch`], in MiB: 1 to [`MAX_OUTPUT_MIB_PER_BATCH`].
    /// Default 16.
    pub max_output_mib_per_batch: u64,
    /// [`Limits::max_instances`]: 1 to [`MAX_INSTANCES`]. Default 1,000.
    pub max_instances: u64,
    /// [`Limits::max_log_line_bytes`]: [`MIN_LOG_LINE_BYTES`] to [`MAX_LOG_LINE_BYTES`].
    /// Default 4,096.
    pub max_log_line_bytes: u64,
}

/// One MiB.
const MIB: u64 = 1024 * 1024;
/// The highest `[engine] max_module_mib`: 1 GiB.
pub const MAX_MODULE_MIB: u64 = 1024;
/// The highest `[engine] max_memory_mib`: 4 GiB, all a 32-bit linear memory can address.
pub const MAX_MEMORY_MIB: u64 = 4096;
/// The lowest `[engine] max_cpu_ms_per_call` and `call_timeout_ms`: one epoch tick
/// ([`Limits::EPOCH_TICK`]).
pub const MIN_CALL_MS: u64 = Limits::EPOCH_TICK.as_millis() as u64;
/// The highest `[engine] max_cpu_ms_per_call` and `call_timeout_ms`: an hour.
pub const MAX_CALL_MS: u64 = 3_600_000;
/// The highest `[engine] max_outputs_per_batch`.
pub const MAX_OUTPUTS_PER_BATCH: u64 = 10_000_000;
/// The highest `[engine] max_output_mib_per_batch`: 1 GiB.
pub const MAX_OUTPUT_MIB_PER_BATCH: u64 = 1024;
/// The highest `[engine] max_instances`. The pooling allocator reserves address space for
/// every instance's memories up front, so this bounds what one process reserves.
pub const MAX_INSTANCES: u64 = 4_000;
/// The lowest `[engine] max_log_line_bytes`.
pub const MIN_LOG_LINE_BYTES: u64 = 80;
/// The highest `[engine] max_log_line_bytes`: 1 MiB.
pub const MAX_LOG_LINE_BYTES: u64 = MIB;

impl Default for EngineSettings {
    fn default() -> Self {
        let limits = Limits::default();
        EngineSettings {
            max_module_mib: limits.max_module_bytes as u64 / MIB,
            max_memory_mib: limits.max_memory_bytes as u64 / MIB,
            max_cpu_ms_per_call: limits.max_cpu_per_call.as_millis() as u64,
            call_timeout_ms: limits.call_timeout.as_millis() as u64,
            max_outputs_per_batch: limits.max_outputs_per_batch as u64,
            max_output_mib_per_batch: limits.max_output_bytes_per_batch as u64 / MIB,
            max_instances: u64::from(limits.max_instances),
            max_log_line_bytes: limits.max_log_line_bytes as u64,
        }
    }
}

impl EngineSettings {
    /// Checks that every number is in its range; the error names the key and the range.
    pub fn validate(&self) -> Result<(), String> {
        let check = |name: &str, value: u64, min: u64, max: u64| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(format!("[engine] {name} = {value} is out of range: use a whole number from {min} to {max}"))
            }
        };
        check("max_module_mib", self.max_module_mib, 1, MAX_MODULE_MIB)?;
        check("max_memory_mib", self.max_memory_mib, 1, MAX_MEMORY_MIB)?;
        check("max_cpu_ms_per_call", self.max_cpu_ms_per_call, MIN_CALL_MS, MAX_CALL_MS)?;
        check("call_timeout_ms", self.call_timeout_ms, MIN_CALL_MS, MAX_CALL_MS)?;
        check("max_outputs_per_batch", self.max_outputs_per_batch, 1, MAX_OUTPUTS_PER_BATCH)?;
        check("max_output_mib_per_batch", self.max_output_mib_per_batch, 1, MAX_OUTPUT_MIB_PER_BATCH)?;
        check("max_instances", self.max_instances, 1, MAX_INSTANCES)?;
        check("max_log_line_bytes", self.max_log_line_bytes, MIN_LOG_LINE_BYTES, MAX_LOG_LINE_BYTES)
    }

    /// The engine's limits: these settings over the defaults of [`Limits`]. Call it on
    /// validated settings (the values then fit their types).
    pub fn limits(&self) -> Limits {
        let bytes = |mib: u64| usize::try_from(mib * MIB).unwrap_or(usize::MAX);
        Limits {
            max_module_bytes: bytes(self.max_module_mib),
            max_memory_bytes: bytes(self.max_memory_mib),
            max_cpu_per_call: Duration::from_millis(self.max_cpu_ms_per_call),
            call_timeout: Duration::from_millis(self.call_timeout_ms),
            max_outputs_per_batch: usize::try_from(self.max_outputs_per_batch).unwrap_or(usize::MAX),
            max_output_bytes_per_batch: bytes(self.max_output_mib_per_batch),
            max_instances: u32::try_from(self.max_instances).unwrap_or(u32::MAX),
            max_log_line_bytes: usize::try_from(self.max_log_line_bytes).unwrap_or(usize::MAX),
            ..Limits::default()
        }
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("sluice-data")
}

/// The most `keep_versions`: each kept version is a module the registry holds on to.
pub const MAX_KEEP_VERSIONS: usize = 1_000;

impl ServeConfig {
    /// Checks the top-level settings' ranges.
    fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_KEEP_VERSIONS).contains(&self.keep_versions) {
            return Err(format!(
                "keep_versions = {} is out of range: use a whole number from 1 (the current version alone) to {MAX_KEEP_VERSIONS}",
                self.keep_versions
            ));
        }
        Ok(())
    }
}

fn default_keep_versions() -> usize {
    DEFAULT_KEEP_VERSIONS
}

fn default_listen() -> SocketAddr {
    DEFAULT_ADMIN_LISTEN.parse().expect("a valid default address")
}

fn default_request_timeout() -> u64 {
    REQUEST_TIMEOUT.as_secs()
}

fn default_header_read_timeout() -> u64 {
    HEADER_READ_TIMEOUT.as_secs()
}

fn default_max_connections() -> usize {
    MAX_CONNECTIONS
}

impl ServeConfig {
    /// A config with no pipelines for the cluster at `brokers`.
    pub fn new(brokers: &str) -> ServeConfig {
        ServeConfig {
            data_dir: default_data_dir(),
            kafka: KafkaConfig::new(brokers.to_string()),
            admin: AdminSettings::default(),
            engine: EngineSettings::default(),
            keep_versions: DEFAULT_KEEP_VERSIONS,
            pipelines: Vec::new(),
            node_id: None,
            registry: RegistryPlace::default(),
            cluster: ClusterConfig::default(),
        }
    }

    /// Reads and checks a config file. Relative module paths are taken from the file's folder.
    pub fn load(path: &Path) -> anyhow::Result<ServeConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut config: ServeConfig = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("invalid config {}: {}", path.display(), toml_error(&text, &e)))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for spec in &mut config.pipelines {
            if spec.module.is_relative() {
                spec.module = base.join(&spec.module);
            }
            spec.check_given()?;
        }
        config.kafka.validate().map_err(anyhow::Error::msg)?;
        config.validate().map_err(|e| anyhow::anyhow!("invalid config {}: {e}", path.display()))?;
        config.admin.validate().map_err(|e| anyhow::anyhow!("invalid config {}: {e}", path.display()))?;
        config.engine.validate().map_err(|e| anyhow::anyhow!("invalid config {}: {e}", path.display()))?;
        config.cluster.validate().map_err(|e| anyhow::anyhow!("invalid config {}: [cluster]: {e}", path.display()))?;
        Ok(config)
    }
}

/// A TOML error as the line and column it is at and its message, without the line itself:
/// the line may hold a secret (a token, a cache URL's password) that the message leaves out.
fn toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim_end();
    match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message.to_string(),
    }
}

/// Opens the runtime of `config`: restores the stored pipelines, then creates or updates the
/// pipelines of the config file from their module files.
pub async fn open(config: &ServeConfig) -> anyhow::Result<PipelineManager> {
    config.engine.validate().map_err(anyhow::Error::msg)?;
    let manager = PipelineManager::open(ManagerConfig {
        limits: config.engine.limits(),
        keep_versions: config.keep_versions,
        node_id: config.node_id.clone(),
        cluster: (config.registry == RegistryPlace::Kafka).then(|| config.cluster.clone()),
        ..ManagerConfig::new(&config.data_dir, config.kafka.clone())
    })
    .await?;
    for spec in &config.pipelines {
        let bytes = std::fs::read(&spec.module)
            .with_context(|| format!("pipeline {}: cannot read module {}", spec.name, spec.module.display()))?;
        let stored = manager.store_module(bytes.into()).await.with_context(|| format!("pipeline {}", spec.name))?;
        let digest = module_digest(&stored.info.digest)?;
        let spec = spec.clone().with_module(digest);
        match manager.apply_declared(spec.clone()).await? {
            Declared::Applied(applied) => {
                tracing::info!(pipeline = %spec.name, ?applied, "pipeline from the config file applied")
            }
            Declared::Kept => {}
            Declared::Failed(_) => {}
        }
    }
    Ok(manager)
}

/// Serves the admin API of `manager` on `settings.listen` until `shutdown` completes, with the
/// connection limits of `settings` ([`admin::serve`]). Refuses a non-loopback address without
/// a token before listening.
pub async fn serve_admin(
    manager: PipelineManager,
    settings: AdminSettings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let config = settings.config();
    settings.validate().map_err(anyhow::Error::msg)?;
    check_listen_address(settings.listen, &config).map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {} for the admin API", settings.listen))?;
    let address = listener.local_addr()?;
    tracing::info!(
        "admin API on http://{address} ({}); web console at http://{address}/ui",
        if config.is_open() { "open: loopback only" } else { "bearer tokens required" }
    );
    let limits = settings.connection_limits();
    admin::serve(listener, admin::router(manager, config), limits, shutdown).await?;
    Ok(())
}

/// Takes over Ctrl-C and SIGTERM now, and returns a future that completes at the first of
/// them. Call it first thing, so a signal during start-up is a clean stop rather than the
/// default sudden death.
pub fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle Ctrl-C")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

/// Ends the process [`SHUTDOWN_TIMEOUT`] from now if it has not ended by then: the bound on
/// a shutdown, whatever a client library waits for.
pub fn exit_after_shutdown_timeout() {
    std::thread::spawn(|| {
        std::thread::sleep(SHUTDOWN_TIMEOUT);
        tracing::error!(
            "the shutdown did not finish within {SHUTDOWN_TIMEOUT:?}; exiting now (records not committed will be processed again after a restart)"
        );
        std::process::exit(1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(table: &str) -> AdminSettings {
        let config: ServeConfig = toml::from_str(&format!("[kafka]\nbrokers = \"b:9092\"\n[admin]\n{table}")).unwrap();
        config.admin
    }

    #[test]
    fn keep_versions_out_of_range_is_refused_naming_the_range() {
        let config = |value: usize| -> ServeConfig {
            toml::from_str(&format!("keep_versions = {value}\n[kafka]\nbrokers = \"b:9092\"")).unwrap()
        };
        for value in [0, MAX_KEEP_VERSIONS + 1] {
            let error = config(value).validate().unwrap_err();
            assert!(error.contains(&format!("keep_versions = {value} is out of range")), "{error}");
            assert!(error.contains("from 1 (the current version alone) to 1000"), "{error}");
        }
        for value in [1, DEFAULT_KEEP_VERSIONS, MAX_KEEP_VERSIONS] {
            assert_eq!(config(value).validate(), Ok(()), "keep_versions = {value}");
        }
    }

    #[test]
    fn admin_connection_limits_default_and_are_read_from_the_admin_table() {
        let defaults = admin("");
        assert_eq!(defaults.connection_limits(), ConnectionLimits::default());
        assert_eq!(defaults.validate(), Ok(()));
        let set = admin("header_read_timeout_secs = 3\nmax_connections = 40");
        assert_eq!(
            set.connection_limits(),
            ConnectionLimits { header_read_timeout: Duration::from_secs(3), max_connections: 40 }
        );
    }

    #[test]
    fn admin_numbers_out_of_range_are_refused_naming_them() {
        for (setting, under, over) in [
            ("request_timeout_secs", 0, MAX_TIMEOUT_SECS + 1),
            ("header_read_timeout_secs", 0, MAX_HEADER_READ_TIMEOUT_SECS + 1),
            ("max_connections", 0, MAX_CONNECTIONS_CAP as u64 + 1),
        ] {
            for value in [under, over] {
                let error = admin(&format!("{setting} = {value}")).validate().unwrap_err();
                assert!(error.contains(setting) && error.contains("out of range"), "{setting} = {value}: {error}");
            }
            let max = over - 1;
            assert_eq!(admin(&format!("{setting} = 1")).validate(), Ok(()), "{setting} = 1");
            assert_eq!(admin(&format!("{setting} = {max}")).validate(), Ok(()), "{setting} = {max}");
        }
    }

    fn engine(table: &str) -> EngineSettings {
        let config: ServeConfig = toml::from_str(&format!("[kafka]\nbrokers = \"b:9092\"\n[engine]\n{table}")).unwrap();
        config.engine
    }

    #[test]
    fn engine_limits_default_to_the_engine_defaults_and_are_read_from_the_engine_table() {
        let config: ServeConfig = toml::from_str("[kafka]\nbrokers = \"b:9092\"").unwrap();
        assert_eq!(config.engine.limits(), Limits::default());
        assert_eq!(config.engine.validate(), Ok(()));
        let set = engine(
            "max_module_mib = 8\nmax_memory_mib = 16\nmax_cpu_ms_per_call = 500\ncall_timeout_ms = 3000\n\
             max_outputs_per_batch = 1000\nmax_output_mib_per_batch = 2\nmax_instances = 50\nmax_log_line_bytes = 200",
        );
        assert_eq!(set.validate(), Ok(()));
        assert_eq!(
            set.limits(),
            Limits {
                max_module_bytes: 8 * 1024 * 1024,
                max_memory_bytes: 16 * 1024 * 1024,
                max_cpu_per_call: Duration::from_millis(500),
                call_timeout: Duration::from_secs(3),
                max_outputs_per_batch: 1000,
                max_output_bytes_per_batch: 2 * 1024 * 1024,
                max_instances: 50,
                max_log_line_bytes: 200,
                ..Limits::default()
            }
        );
    }

    #[test]
    fn engine_numbers_out_of_range_are_refused_naming_the_key_and_its_range() {
        for (setting, min, max) in [
            ("max_module_mib", 1, MAX_MODULE_MIB),
            ("max_memory_mib", 1, MAX_MEMORY_MIB),
            ("max_cpu_ms_per_call", MIN_CALL_MS, MAX_CALL_MS),
            ("call_timeout_ms", MIN_CALL_MS, MAX_CALL_MS),
            ("max_outputs_per_batch", 1, MAX_OUTPUTS_PER_BATCH),
            ("max_output_mib_per_batch", 1, MAX_OUTPUT_MIB_PER_BATCH),
            ("max_instances", 1, MAX_INSTANCES),
            ("max_log_line_bytes", MIN_LOG_LINE_BYTES, MAX_LOG_LINE_BYTES),
        ] {
            for value in [min - 1, max + 1] {
                let error = engine(&format!("{setting} = {value}")).validate().unwrap_err();
                let range = format!("from {min} to {max}");
                assert!(error.contains(&format!("[engine] {setting} = {value}")) && error.contains(&range), "{error}");
            }
            assert_eq!(engine(&format!("{setting} = {min}")).validate(), Ok(()), "{setting} = {min}");
            assert_eq!(engine(&format!("{setting} = {max}")).validate(), Ok(()), "{setting} = {max}");
        }
        let unknown = toml::from_str::<ServeConfig>("[kafka]\nbrokers = \"b:9092\"\n[engine]\nmax_memory = 5");
        assert!(unknown.unwrap_err().to_string().contains("max_memory"), "an unknown key is refused");
    }

    #[test]
    fn an_engine_at_the_highest_memory_and_instance_limits_can_be_built() {
        let settings = engine(&format!("max_memory_mib = {MAX_MEMORY_MIB}\nmax_instances = {MAX_INSTANCES}"));
        let config = crate::engine::EngineConfig { limits: settings.limits(), ..Default::default() };
        crate::engine::Engine::new(config).expect("the pooling allocator reserves what the highest limits need");
    }

    #[test]
    fn a_config_file_error_names_its_line_but_does_not_show_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        let text = "[kafka]\nbrokers = \"b:9092\"\n\n[[pipeline]]\nname = \"p\"\ninputs = [\"in\"]\n\
                    outputs = { default = \"out\" }\nmodule = \"f.wasm\"\ncache = \"redis://u:hunter2@h:0\"\n";
        std::fs::write(&path, text).unwrap();
        let error = format!("{:#}", ServeConfig::load(&path).unwrap_err());
        assert!(error.contains("line 9, column 9: cache: cache URL \"redis://***@h:0\": port \"0\""), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn a_declared_module_path_is_taken_from_the_config_files_folder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        let text = "[kafka]\nbrokers = \"b:9092\"\n\n[[pipeline]]\nname = \"p\"\ninputs = [\"in\"]\n\
                    outputs = { default = \"out\" }\nmodule = \"functions/f.wasm\"\n\n[[pipeline]]\nname = \"q\"\n\
                    inputs = [\"in\"]\noutputs = { default = \"out\" }\nmodule = \"/abs/g.wasm\"\n";
        std::fs::write(&path, text).unwrap();
        let config = ServeConfig::load(&path).unwrap();
        let modules: Vec<&Path> = config.pipelines.iter().map(|p| p.module.as_path()).collect();
        assert_eq!(modules, [dir.path().join("functions/f.wasm").as_path(), Path::new("/abs/g.wasm")]);
    }

    #[test]
    fn the_debug_form_of_the_admin_table_hides_the_tokens() {
        let shown = format!("{:?}", admin("admin_token = \"a-secret\"\nread_token = \"r-secret\""));
        assert!(!shown.contains("secret"), "{shown}");
    }
}
