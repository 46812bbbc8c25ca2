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
use sluice_kafka::KafkaConfig;
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
    /// Module versions kept per pipeline for rollback. Default 10.
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

fn default_data_dir() -> PathBuf {
    PathBuf::from("sluice-data")
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
            keep_versions: DEFAULT_KEEP_VERSIONS,
            pipelines: Vec::new(),
            node_id: None,
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
        config.admin.validate().map_err(|e| anyhow::anyhow!("invalid config {}: {e}", path.display()))?;
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
    let manager = PipelineManager::open(ManagerConfig {
        keep_versions: config.keep_versions,
        node_id: config.node_id.clone(),
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
        "admin API on http://{address} ({})",
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
