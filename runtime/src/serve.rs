//! `sluice serve`: runs the pipelines declared in a config file until the process is asked to
//! stop, then stops them cleanly (finishing or abandoning in-flight batches, committing what
//! was processed).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use serde::Deserialize;

use crate::cache::{self, Cache, CacheBackend, MemoryCache, Namespace};
use crate::engine::{Engine, EngineConfig, Module};
use crate::kafka::KafkaConfig;
use crate::pipeline::Pipeline;
use crate::pipeline::spec::PipelineSpec;

/// A config file for `sluice serve` (TOML).
///
/// ```toml
/// data_dir = "sluice-data"          # compiled-module cache; default ./sluice-data
///
/// [kafka]
/// brokers = "127.0.0.1:9092"
/// properties = { "security.protocol" = "ssl" }   # passed through to librdkafka
///
/// [[pipeline]]
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
    /// Where compiled modules are kept between restarts.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The cluster.
    pub kafka: KafkaConfig,
    /// The pipelines to run.
    #[serde(default, rename = "pipeline")]
    pub pipelines: Vec<PipelineSpec>,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("sluice-data")
}

impl ServeConfig {
    /// Reads and checks a config file. Relative module paths are taken from the file's folder.
    pub fn load(path: &Path) -> anyhow::Result<ServeConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut config: ServeConfig =
            toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for spec in &mut config.pipelines {
            if Path::new(&spec.module).is_relative() {
                spec.module = base.join(&spec.module).to_string_lossy().into_owned();
            }
            spec.validate()?;
        }
        config.kafka.validate().map_err(anyhow::Error::msg)?;
        Ok(config)
    }
}

/// Pipelines started from a config, and what they share.
pub struct Runtime {
    engine: Engine,
    memory: Arc<MemoryCache>,
    pipelines: Vec<Pipeline>,
}

impl Runtime {
    /// Starts every pipeline of `config`.
    pub async fn start(config: &ServeConfig) -> anyhow::Result<Runtime> {
        let engine = Engine::new(EngineConfig {
            artifact_dir: Some(config.data_dir.join("artifacts")),
            ..EngineConfig::default()
        })?;
        let mut runtime = Runtime { engine, memory: Arc::new(MemoryCache::new()), pipelines: Vec::new() };
        let mut modules: HashMap<String, Module> = HashMap::new();
        for spec in &config.pipelines {
            let module = match modules.get(&spec.module) {
                Some(module) => module.clone(),
                None => {
                    let module = load_module(&runtime.engine, Path::new(&spec.module)).await?;
                    modules.insert(spec.module.clone(), module.clone());
                    module
                }
            };
            let cache = runtime.cache_for(spec).await?;
            let pipeline = Pipeline::start(spec.clone(), &config.kafka, &runtime.engine, module, cache).await?;
            runtime.pipelines.push(pipeline);
        }
        Ok(runtime)
    }

    /// The running pipelines.
    pub fn pipelines(&self) -> &[Pipeline] {
        &self.pipelines
    }

    /// Stops every pipeline.
    pub async fn stop(self) {
        for pipeline in self.pipelines {
            pipeline.stop().await;
        }
    }

    /// The pipeline's cache. Every plain `memory://` pipeline of this process shares one
    /// in-memory backend, so pipelines that name the same namespace share keys, as they would
    /// on Redis; `memory://?capacity_mb=N` gets a backend of its own.
    async fn cache_for(&self, spec: &PipelineSpec) -> anyhow::Result<Cache> {
        let backend: Arc<dyn CacheBackend> = if matches!(spec.cache.as_str(), "memory://" | "memory:///") {
            self.memory.clone()
        } else {
            cache::connect(&spec.cache)
                .await
                .with_context(|| format!("pipeline {}: cache {}", spec.name, spec.cache))?
        };
        let namespace = Namespace::new(spec.namespace()).with_context(|| format!("pipeline {}", spec.name))?;
        Ok(Cache::new(backend, namespace))
    }
}

/// Reads and compiles a module file off the async executor.
pub async fn load_module(engine: &Engine, path: &Path) -> anyhow::Result<Module> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read module {}", path.display()))?;
    let engine = engine.clone();
    let module =
        tokio::task::spawn_blocking(move || engine.load(&bytes)).await.context("module loading task failed")?;
    module.with_context(|| format!("cannot load module {}", path.display()))
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
