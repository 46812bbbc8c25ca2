//! The pipeline manager: the pipelines of one runtime process and every operation on them.
//!
//! The manager owns the running [`Pipeline`]s, the engine they share, the module registry and
//! the pipeline store in the data directory. Every change (create, update, reload, rollback,
//! pause, resume, delete) is applied to the running pipeline first and then written to the
//! store, so that a restart ([`PipelineManager::open`]) brings back every pipeline as it was,
//! running or paused, resuming from its committed offsets. Operations on pipelines are
//! serialised; reads ([`PipelineManager::list`], [`PipelineManager::get`]) only wait for the
//! change in progress.
//!
//! A module change on a running pipeline is a hot reload: the new module is loaded (compiled
//! and checked) before anything changes, then each partition worker switches to it between
//! two batches ([`Pipeline::reload`]). Any other change of the spec restarts the pipeline,
//! which commits what it processed and resumes from there.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use serde::Serialize;

use sluice_cache::{Cache, CacheBackend, MemoryCache, Namespace};
use sluice_engine::{Engine, EngineConfig, Limits, Module};
use sluice_kafka::KafkaConfig;
use sluice_kafka::source::{self, PartitionOffsets};

use crate::registry::module_digest;
use crate::registry::pipelines::RevisionCause;
use crate::registry::pipelines::{
    DEFAULT_KEEP_VERSIONS, DesiredState, PipelineRecord, PipelineStore, Revision, StoreError,
};
use crate::registry::{ModuleInfo, ModuleRegistry, RegistryError, Stored, canonical_digest};
use crate::spec::{PipelineSpec, SpecError, StartPosition};
use crate::{Pipeline, PipelineCacheStatus, PipelineStats, PipelineStatus, StartOptions};

/// How often pipelines that should run but could not start (the broker was down at start-up,
/// say) are tried again.
pub const RESTART_INTERVAL: Duration = Duration::from_secs(5);

/// How to open a [`PipelineManager`].
#[derive(Clone)]
pub struct ManagerConfig {
    /// Where modules, compiled artifacts and pipeline records are kept.
    pub data_dir: PathBuf,
    /// The cluster every pipeline reads and writes.
    pub kafka: KafkaConfig,
    /// Limits of the engine's modules and instances.
    pub limits: Limits,
    /// Module versions kept per pipeline for rollback, the current one included.
    /// Default [`DEFAULT_KEEP_VERSIONS`].
    pub keep_versions: usize,
    /// Creates a pipeline's missing topics instead of refusing it: for `sluice dev`'s
    /// embedded cluster.
    pub create_topics: Option<TopicCreator>,
    /// This runtime's node id, the static member name of its pipelines in their consumer
    /// groups. `None`: the id kept in the data directory (made on first start).
    pub node_id: Option<String>,
}

/// Creates one topic on the cluster (for `sluice dev`, whose embedded cluster creates topics
/// through its own handle).
pub type TopicCreator = Arc<dyn Fn(&str) -> anyhow::Result<()> + Send + Sync>;

impl ManagerConfig {
    /// A config with the defaults for `data_dir` and `kafka`.
    pub fn new(data_dir: impl Into<PathBuf>, kafka: KafkaConfig) -> ManagerConfig {
        ManagerConfig {
            data_dir: data_dir.into(),
            kafka,
            limits: Limits::default(),
            keep_versions: DEFAULT_KEEP_VERSIONS,
            create_topics: None,
            node_id: None,
        }
    }
}

/// Why a manager operation failed. Each message names the pipeline or module concerned.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// No pipeline of this name.
    #[error("pipeline {name:?} does not exist")]
    NotFound {
        /// The name asked for.
        name: String,
    },
    /// The spec is not valid.
    #[error(transparent)]
    InvalidSpec(#[from] SpecError),
    /// The operation does not fit the pipeline's state or history.
    #[error("{0}")]
    Conflict(String),
    /// A registry call failed (a module not found, refused or unreadable).
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The pipeline could not start: a missing topic, an unreachable broker or cache.
    #[error("pipeline {name}: cannot start: {reason}")]
    Start {
        /// The pipeline.
        name: String,
        /// Why, with its causes.
        reason: String,
    },
    /// A request to the Kafka cluster failed.
    #[error("{0}")]
    Kafka(String),
    /// The pipeline store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What [`PipelineManager::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Applied {
    /// A new pipeline was created and started.
    Created,
    /// The module changed and the running pipeline switched to it without stopping.
    Reloaded,
    /// Other settings changed: the pipeline was restarted with them (or, paused, will start
    /// with them).
    Updated,
    /// The spec was the same as before.
    Unchanged,
}

/// What [`PipelineManager::apply_declared`] did with a pipeline of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Declared {
    /// The declaration was applied (new, or changed since it was last applied).
    Applied(Applied),
    /// The declaration is the one applied before, and the pipeline was changed since over the
    /// API: the stored state is kept.
    Kept,
    /// The pipeline could not start: it is kept as failed and tried again.
    Failed(String),
}

/// What a reload or rollback did.
#[derive(Debug, Clone, Serialize)]
pub struct ModuleChange {
    /// `reloaded`; `unchanged` when the module named is the one running.
    pub applied: Applied,
    /// The revision this one replaced before any partition took it up (so it never processed
    /// a record): reloads in quick succession are merged into the newest.
    pub superseded: Option<u64>,
    /// The pipeline after the change.
    #[serde(flatten)]
    pub pipeline: PipelineSummary,
}

/// A pipeline's state as the runtime sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PipelineState {
    /// Consuming and processing.
    Running,
    /// Paused by an operator.
    Paused,
    /// Should run but could not start; tried again every [`RESTART_INTERVAL`].
    Failed,
    /// Running, but it has owned no partition for [`crate::STALL_AFTER`] while its
    /// consumer group has records waiting and commits nothing: see the status for why.
    Stalled,
}

/// One pipeline, briefly, for listings.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineSummary {
    /// The pipeline.
    pub name: String,
    /// Its state.
    pub state: PipelineState,
    /// The current module revision.
    pub revision: u64,
    /// The current module digest.
    pub module: String,
    /// Input topics.
    pub inputs: Vec<String>,
    /// Records consumed since this process started.
    pub records_in: u64,
    /// Outputs produced since this process started.
    pub records_out: u64,
    /// Records that failed for good since this process started.
    pub failed: u64,
    /// Records behind the high watermark, summed over the partitions this runtime works on.
    pub lag: i64,
    /// Partitions this runtime owns now.
    pub partitions: usize,
}

/// One pipeline in full.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineReport {
    /// The pipeline.
    pub name: String,
    /// Its state.
    pub state: PipelineState,
    /// Why it could not start, when [`PipelineState::Failed`].
    pub error: Option<String>,
    /// The current module revision.
    pub revision: u64,
    /// The kept module versions, oldest first; the last is the current one.
    pub revisions: Vec<Revision>,
    /// The spec, its `module` the current digest, its cache URL without user info
    /// ([`crate::spec::CacheSetting::redacted`]).
    pub spec: PipelineSpec,
    /// Counters since this process started, and the partitions this runtime works on.
    pub status: PipelineStatus,
    /// The consumer group's committed offsets and lag per input partition, from the broker.
    pub offsets: Vec<PartitionOffsets>,
    /// Why `offsets` is empty, when the broker could not be asked.
    pub offsets_error: Option<String>,
}

/// The pipelines of one runtime. Cheap to clone.
#[derive(Clone)]
pub struct PipelineManager {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    registry: ModuleRegistry,
    store: PipelineStore,
    kafka: KafkaConfig,
    keep_versions: usize,
    create_topics: Option<TopicCreator>,
    /// This runtime's node id (see [`ManagerConfig::node_id`]).
    node_id: String,
    /// Set once [`PipelineManager::shutdown`] begins: nothing starts after it.
    shutting_down: AtomicBool,
    /// Held for the manager's life: one runtime per data directory.
    _data_dir_lock: std::fs::File,
    /// The in-memory cache shared by every plain `memory://` pipeline.
    memory: Arc<MemoryCache>,
    /// Modules loaded so far, by digest: a rollback to a version loaded before is instant.
    modules: Mutex<HashMap<String, Module>>,
    pipelines: tokio::sync::Mutex<BTreeMap<String, Managed>>,
}

/// A pipeline the manager keeps.
struct Managed {
    record: PipelineRecord,
    running: Option<Pipeline>,
    stats: Arc<PipelineStats>,
    /// The pipeline's cache, kept across pauses; `None` before its first start.
    cache: Option<Cache>,
    /// Why it is not running although it should.
    failure: Option<String>,
}

impl Managed {
    fn new(record: PipelineRecord) -> Managed {
        Managed { record, running: None, stats: Arc::default(), cache: None, failure: None }
    }

    fn state(&self) -> PipelineState {
        match (self.record.state, &self.running) {
            (DesiredState::Paused, _) => PipelineState::Paused,
            (DesiredState::Running, Some(pipeline)) if pipeline.stalled().is_some() => PipelineState::Stalled,
            (DesiredState::Running, Some(_)) => PipelineState::Running,
            (DesiredState::Running, None) => PipelineState::Failed,
        }
    }

    fn status(&self) -> PipelineStatus {
        if let Some(pipeline) = &self.running {
            return pipeline.status();
        }
        let spec = &self.record.spec;
        let cache = PipelineCacheStatus {
            backend: self.cache.as_ref().map_or("none", Cache::kind),
            namespace: spec.namespace().to_string(),
            stats: self.cache.as_ref().map(|c| c.stats().snapshot()).unwrap_or_default(),
        };
        self.stats.snapshot(&spec.name, spec.module.to_string(), cache)
    }

    fn summary(&self) -> PipelineSummary {
        let status = self.status();
        PipelineSummary {
            name: self.record.spec.name.clone(),
            state: self.state(),
            revision: self.record.revision(),
            module: self.record.spec.module.to_string(),
            inputs: self.record.spec.inputs.clone(),
            records_in: status.records_in,
            records_out: status.records_out,
            failed: status.failed,
            lag: status.partitions.iter().filter_map(|p| p.lag).sum(),
            partitions: status.owned_partitions,
        }
    }
}

impl PipelineManager {
    /// Opens the data directory (creating it when missing), then starts every stored pipeline
    /// that should run. A pipeline that cannot start is kept as [`PipelineState::Failed`] and
    /// tried again every [`RESTART_INTERVAL`].
    pub async fn open(config: ManagerConfig) -> anyhow::Result<PipelineManager> {
        let data_dir_lock = lock_data_dir(&config.data_dir)?;
        let node_id = match config.node_id {
            Some(id) => {
                crate::registry::node::validate_node_id(&id).map_err(anyhow::Error::msg)?;
                id
            }
            None => crate::registry::node::load_or_create(&config.data_dir)
                .with_context(|| format!("cannot read or make the node id in {}", config.data_dir.display()))?,
        };
        tracing::info!(node = %node_id, data_dir = %config.data_dir.display(), "runtime node");
        let engine = Engine::new(EngineConfig {
            limits: config.limits.clone(),
            artifact_dir: Some(config.data_dir.join("artifacts")),
        })?;
        let registry = ModuleRegistry::open(&config.data_dir, engine.clone())?;
        let store = PipelineStore::open(&config.data_dir)?;
        let records = store.load_all()?;
        let manager = PipelineManager {
            inner: Arc::new(Inner {
                engine,
                registry,
                store,
                kafka: config.kafka,
                keep_versions: config.keep_versions.max(1),
                create_topics: config.create_topics,
                node_id,
                shutting_down: AtomicBool::new(false),
                _data_dir_lock: data_dir_lock,
                memory: Arc::new(MemoryCache::new()),
                modules: Mutex::default(),
                pipelines: tokio::sync::Mutex::default(),
            }),
        };
        {
            let mut pipelines = manager.inner.pipelines.lock().await;
            for record in records {
                let name = record.spec.name.clone();
                let mut managed = Managed::new(record);
                if managed.record.state == DesiredState::Running {
                    manager.start(&mut managed).await;
                }
                tracing::info!(pipeline = %name, state = ?managed.state(), revision = managed.record.revision(), "pipeline restored");
                pipelines.insert(name, managed);
            }
        }
        tokio::spawn(restart_failed(Arc::downgrade(&manager.inner)));
        Ok(manager)
    }

    /// The engine every pipeline runs on.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The module registry.
    pub fn registry(&self) -> &ModuleRegistry {
        &self.inner.registry
    }

    /// The cluster.
    pub fn kafka(&self) -> &KafkaConfig {
        &self.inner.kafka
    }

    /// Creates the pipeline `spec.name`, or updates it to `spec`. `spec.module` is the digest
    /// of a module in the registry. See [`Applied`] for what an update does. The spec is
    /// checked as an operator's ([`PipelineSpec::check_given`]).
    pub async fn apply(&self, spec: PipelineSpec) -> Result<Applied, ManagerError> {
        spec.check_given()?;
        Ok(self.apply_with_cause(spec, RevisionCause::Deploy).await?.0)
    }

    /// Applies a pipeline declared in `sluice serve`'s config file (its `module` a digest in the
    /// registry). The API's history wins over an unchanged file: when the declaration is the
    /// one applied last time, the stored state is kept, whatever was reloaded, rolled back or
    /// updated over the API since; a declaration that changed is applied. A pipeline that
    /// cannot start is kept as failed and tried again, like a restored one.
    pub async fn apply_declared(&self, spec: PipelineSpec) -> Result<Declared, ManagerError> {
        spec.check_given()?;
        let declared = declaration_digest(&spec);
        {
            let pipelines = self.inner.pipelines.lock().await;
            if let Some(managed) = pipelines.get(&spec.name) {
                let record = &managed.record;
                if record.declared.as_deref() == Some(declared.as_str()) {
                    if record.spec != spec {
                        let current = record.revisions.last();
                        tracing::info!(
                            pipeline = %spec.name,
                            "the config file declares it as it was first applied, but it was changed since over the API \
                             (now revision {}, module {}, by {}); keeping the stored state; edit the file to apply it again",
                            record.revision(),
                            record.spec.module,
                            current.map_or(RevisionCause::Deploy, |r| r.cause)
                        );
                    }
                    return Ok(Declared::Kept);
                }
                if record.spec != spec {
                    tracing::info!(pipeline = %spec.name, "the config file's declaration changed since it was last applied: applying it");
                }
            }
        }
        let outcome = match self.apply_with_cause(spec.clone(), RevisionCause::Deploy).await {
            Ok((applied, _)) => Declared::Applied(applied),
            Err(ManagerError::Start { reason, .. }) => {
                let mut pipelines = self.inner.pipelines.lock().await;
                if !pipelines.contains_key(&spec.name) {
                    tracing::error!(pipeline = %spec.name, "pipeline not started: {reason}; trying again every {RESTART_INTERVAL:?}");
                    let mut managed = Managed::new(PipelineRecord::new(spec.clone()));
                    managed.failure = Some(reason.clone());
                    pipelines.insert(spec.name.clone(), managed);
                }
                Declared::Failed(reason)
            }
            Err(e) => return Err(e),
        };
        let mut pipelines = self.inner.pipelines.lock().await;
        if let Some(managed) = pipelines.get_mut(&spec.name) {
            let mut record = managed.record.clone();
            record.declared = Some(declared);
            self.save(&record).await?;
            managed.record = record;
        }
        Ok(outcome)
    }

    /// Stores `module` in the registry, then applies `spec` with it: a deploy in one call.
    pub async fn deploy(&self, mut spec: PipelineSpec, module: Bytes) -> Result<(Applied, ModuleInfo), ManagerError> {
        spec.check_given()?;
        let stored = self.store_module(module).await?;
        spec.module = module_digest(&stored.info.digest)?;
        Ok((self.apply(spec).await?, stored.info))
    }

    /// Stores `bytes` in the registry, checked and compiled, and keeps the compiled module.
    pub async fn store_module(&self, bytes: Bytes) -> Result<Stored, ManagerError> {
        let stored = self.inner.registry.put(bytes).await?;
        if let Some(module) = &stored.module {
            self.inner
                .modules
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(stored.info.digest.clone(), module.clone());
        }
        Ok(stored)
    }

    /// Switches the pipeline to the module `digest` (in the registry) without stopping it.
    pub async fn reload(&self, name: &str, digest: &str) -> Result<ModuleChange, ManagerError> {
        let spec = {
            let pipelines = self.inner.pipelines.lock().await;
            let managed = pipelines.get(name).ok_or_else(|| not_found(name))?;
            PipelineSpec { module: module_digest(digest)?, ..managed.record.spec.clone() }
        };
        let (applied, superseded) = self.apply_with_cause(spec, RevisionCause::Reload).await?;
        Ok(ModuleChange { applied, superseded, pipeline: self.summary(name).await? })
    }

    /// Switches the pipeline back to a kept module version: the newest one before the current
    /// that runs another module, or revision `to`. The rollback is itself a new revision, so
    /// a second rollback undoes the first.
    pub async fn rollback(&self, name: &str, to: Option<u64>) -> Result<ModuleChange, ManagerError> {
        let spec = {
            let pipelines = self.inner.pipelines.lock().await;
            let managed = pipelines.get(name).ok_or_else(|| not_found(name))?;
            let record = &managed.record;
            let target = match to {
                Some(revision) => record.find(revision).ok_or_else(|| {
                    let kept: Vec<u64> = record.revisions.iter().map(|r| r.revision).collect();
                    ManagerError::Conflict(format!(
                        "pipeline {name}: revision {revision} is not kept (kept revisions: {kept:?})"
                    ))
                })?,
                None => record.previous().ok_or_else(|| {
                    ManagerError::Conflict(format!(
                        "pipeline {name}: no earlier module version to roll back to (revision {} is the only one kept)",
                        record.revision()
                    ))
                })?,
            };
            PipelineSpec { module: target.module.clone(), ..record.spec.clone() }
        };
        let (applied, superseded) = self.apply_with_cause(spec, RevisionCause::Rollback).await?;
        Ok(ModuleChange { applied, superseded, pipeline: self.summary(name).await? })
    }

    /// Stops the pipeline, committing what it processed; it stays paused across restarts.
    pub async fn pause(&self, name: &str) -> Result<PipelineSummary, ManagerError> {
        let mut pipelines = self.inner.pipelines.lock().await;
        let managed = pipelines.get_mut(name).ok_or_else(|| not_found(name))?;
        if managed.record.state != DesiredState::Paused {
            let mut record = managed.record.clone();
            record.state = DesiredState::Paused;
            self.save(&record).await?;
            managed.record = record;
            if let Some(pipeline) = managed.running.take() {
                pipeline.stop().await;
            }
            managed.failure = None;
            tracing::info!(pipeline = %name, "pipeline paused");
        }
        Ok(managed.summary())
    }

    /// Starts a paused (or failed) pipeline again, from its committed offsets.
    pub async fn resume(&self, name: &str) -> Result<PipelineSummary, ManagerError> {
        let mut pipelines = self.inner.pipelines.lock().await;
        let managed = pipelines.get_mut(name).ok_or_else(|| not_found(name))?;
        if managed.running.is_none() {
            let module = self.module(managed.record.spec.module.as_str()).await?;
            self.start_with(managed, module).await?;
            if managed.record.state != DesiredState::Running {
                let mut record = managed.record.clone();
                record.state = DesiredState::Running;
                self.save(&record).await?;
                managed.record = record;
            }
            tracing::info!(pipeline = %name, "pipeline resumed");
        }
        Ok(managed.summary())
    }

    /// Stops the pipeline and forgets it. Its consumer group and committed offsets stay on
    /// the cluster, so a pipeline created again with the same name resumes from them.
    pub async fn delete(&self, name: &str) -> Result<(), ManagerError> {
        let mut pipelines = self.inner.pipelines.lock().await;
        let managed = pipelines.remove(name).ok_or_else(|| not_found(name))?;
        if let Some(pipeline) = managed.running {
            pipeline.stop().await;
        }
        let store = self.inner.store.clone();
        let name = name.to_string();
        blocking(move || store.remove(&name)).await
    }

    /// Commits new offsets for a paused pipeline's consumer group; it resumes from them.
    pub async fn reset_offsets(&self, name: &str, to: StartPosition) -> Result<Vec<(String, i32, i64)>, ManagerError> {
        to.validate()
            .map_err(|reason| SpecError { pipeline: name.to_string(), reason: format!("offsets reset: {reason}") })?;
        let pipelines = self.inner.pipelines.lock().await;
        let managed = pipelines.get(name).ok_or_else(|| not_found(name))?;
        if managed.running.is_some() || managed.record.state != DesiredState::Paused {
            return Err(ManagerError::Conflict(format!(
                "pipeline {name} is running: pause it before resetting its offsets"
            )));
        }
        let (spec, kafka) = (managed.record.spec.clone(), self.inner.kafka.clone());
        tokio::task::spawn_blocking(move || source::reset_offsets(&spec.consumer_spec(), &kafka, &to))
            .await
            .map_err(|e| ManagerError::Kafka(format!("pipeline {name}: offset task failed: {e}")))?
            .map_err(|e| ManagerError::Kafka(format!("{e:#}")))
    }

    /// Every pipeline, by name.
    pub async fn list(&self) -> Vec<PipelineSummary> {
        self.inner.pipelines.lock().await.values().map(Managed::summary).collect()
    }

    /// One pipeline, briefly.
    pub async fn summary(&self, name: &str) -> Result<PipelineSummary, ManagerError> {
        let pipelines = self.inner.pipelines.lock().await;
        pipelines.get(name).map(Managed::summary).ok_or_else(|| not_found(name))
    }

    /// One pipeline's counters and partitions, without asking the broker anything.
    pub async fn get_status(&self, name: &str) -> Result<PipelineStatus, ManagerError> {
        let pipelines = self.inner.pipelines.lock().await;
        pipelines.get(name).map(Managed::status).ok_or_else(|| not_found(name))
    }

    /// One pipeline in full, with its consumer group's offsets asked of the broker.
    pub async fn get(&self, name: &str) -> Result<PipelineReport, ManagerError> {
        let mut report = {
            let pipelines = self.inner.pipelines.lock().await;
            let managed = pipelines.get(name).ok_or_else(|| not_found(name))?;
            PipelineReport {
                name: name.to_string(),
                state: managed.state(),
                error: managed.failure.clone(),
                revision: managed.record.revision(),
                revisions: managed.record.revisions.clone(),
                // The cache URL's user info stays in the stored spec only.
                spec: PipelineSpec { cache: managed.record.spec.cache.redacted(), ..managed.record.spec.clone() },
                status: managed.status(),
                offsets: Vec::new(),
                offsets_error: None,
            }
        };
        let (spec, kafka) = (report.spec.clone(), self.inner.kafka.clone());
        match tokio::task::spawn_blocking(move || source::group_offsets(&spec.consumer_spec(), &kafka)).await {
            Ok(Ok(offsets)) => report.offsets = offsets,
            Ok(Err(e)) => report.offsets_error = Some(format!("{e:#}")),
            Err(e) => report.offsets_error = Some(format!("offset task failed: {e}")),
        }
        Ok(report)
    }

    /// Every pipeline's status, for metrics.
    pub async fn statuses(&self) -> Vec<(PipelineSummary, PipelineStatus)> {
        self.inner.pipelines.lock().await.values().map(|m| (m.summary(), m.status())).collect()
    }

    /// The pipelines whose kept versions use the module `digest`.
    pub async fn module_users(&self, digest: &str) -> Result<Vec<String>, ManagerError> {
        let digest = canonical_digest(digest)?;
        let pipelines = self.inner.pipelines.lock().await;
        Ok(pipelines
            .values()
            .filter(|m| m.record.revisions.iter().any(|r| r.module.as_str() == digest))
            .map(|m| m.record.spec.name.clone())
            .collect())
    }

    /// Deletes the module `digest` from the registry, unless a pipeline runs or keeps it.
    /// The check and the delete are one step under the pipelines' lock, under which
    /// [`PipelineManager::apply`] also checks that its module is stored: of a delete and an
    /// apply of one module, only one can succeed.
    pub async fn delete_module(&self, digest: &str) -> Result<(), ManagerError> {
        let digest = canonical_digest(digest)?;
        let pipelines = self.inner.pipelines.lock().await;
        let users: Vec<&str> = pipelines
            .values()
            .filter(|m| m.record.revisions.iter().any(|r| r.module.as_str() == digest))
            .map(|m| m.record.spec.name.as_str())
            .collect();
        if !users.is_empty() {
            return Err(ManagerError::Conflict(format!(
                "module {digest} is used by pipelines {users:?} (as the current or a kept version); delete or update them first"
            )));
        }
        self.inner.registry.delete(&digest).await?;
        self.inner.modules.lock().unwrap_or_else(|p| p.into_inner()).remove(&digest);
        drop(pipelines);
        Ok(())
    }

    /// This runtime's node id.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// Stops every running pipeline, all at once, for a clean process exit; nothing is
    /// started after this begins. Their records keep saying whether they should run, so the
    /// next start brings them back.
    ///
    /// Each pipeline commits and leaves its consumer group, so the other runtimes of the
    /// group take its partitions over at once rather than after the session timeout (a
    /// runtime that never comes back must not hold them); a restart joins again in seconds.
    /// Static membership is for crashes: a runtime killed without warning comes back as the
    /// same member.
    pub async fn shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        let mut pipelines = self.inner.pipelines.lock().await;
        let stopping = pipelines.values_mut().filter_map(|m| m.running.take()).map(Pipeline::stop);
        futures_util::future::join_all(stopping).await;
    }

    fn shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }

    /// Applies `spec`; also returns the revision a module change superseded, if any.
    async fn apply_with_cause(
        &self,
        spec: PipelineSpec,
        cause: RevisionCause,
    ) -> Result<(Applied, Option<u64>), ManagerError> {
        spec.validate()?;
        // Loaded (and checked) before anything changes: a bad module leaves the pipeline as is.
        let module = self.module(spec.module.as_str()).await?;
        let mut pipelines = self.inner.pipelines.lock().await;
        // Deleted since it was loaded? Deletes check users under this lock (delete_module).
        if self.inner.registry.info(spec.module.as_str()).await?.is_none() {
            return Err(RegistryError::NotFound { digest: spec.module.to_string() }.into());
        }
        let Some(managed) = pipelines.get_mut(&spec.name) else {
            let name = spec.name.clone();
            let mut managed = Managed::new(PipelineRecord::new(spec));
            self.start_with(&mut managed, module).await?;
            if let Err(e) = self.save(&managed.record).await {
                if let Some(pipeline) = managed.running.take() {
                    pipeline.stop().await;
                }
                return Err(e);
            }
            tracing::info!(pipeline = %name, "pipeline created");
            pipelines.insert(name, managed);
            return Ok((Applied::Created, None));
        };
        let old = managed.record.spec.clone();
        if old == spec {
            return Ok((Applied::Unchanged, None));
        }
        let module_changed = old.module != spec.module;
        let settings_changed = PipelineSpec { module: spec.module.clone(), ..old.clone() } != spec;
        let mut record = managed.record.clone();
        if module_changed {
            record.push_revision(&spec.module, cause, self.inner.keep_versions);
        }
        record.spec = spec;
        if settings_cache_changed(&old, &record.spec) {
            // The next start connects to the new cache.
            managed.cache = None;
        }
        let mut superseded = None;
        if settings_changed && managed.running.is_some() {
            // Check the new settings where possible before stopping the running pipeline.
            self.check_topics(&record.spec).await?;
            let previous = managed.running.take().expect("checked above");
            // Started again at once, as the same group member.
            previous.stop_for_restart().await;
            let old_record = std::mem::replace(&mut managed.record, record.clone());
            if let Err(e) = self.start_with(managed, module).await {
                // Put the previous spec back, running.
                managed.record = old_record;
                let previous_module = self.module(old.module.as_str()).await?;
                if let Err(again) = self.start_with(managed, previous_module).await {
                    tracing::error!(pipeline = %old.name, "cannot restart with the previous spec either: {again}");
                }
                return Err(e);
            }
        } else if let Some(pipeline) = &managed.running {
            superseded = pipeline.reload(module, record.revision());
            if let Some(revision) = superseded {
                record.mark_superseded(revision);
            }
        }
        if let Err(e) = self.save(&record).await {
            tracing::error!(pipeline = %record.spec.name, "the change is applied but not saved: {e}");
            return Err(e);
        }
        managed.record = record;
        Ok((if settings_changed { Applied::Updated } else { Applied::Reloaded }, superseded))
    }

    /// The module `digest`, loaded once and kept.
    async fn module(&self, digest: &str) -> Result<Module, ManagerError> {
        let digest = canonical_digest(digest)?;
        if let Some(module) = self.inner.modules.lock().unwrap_or_else(|p| p.into_inner()).get(&digest) {
            return Ok(module.clone());
        }
        let Some((_, bytes)) = self.inner.registry.get(&digest).await? else {
            return Err(RegistryError::NotFound { digest }.into());
        };
        let engine = self.inner.engine.clone();
        let loaded = tokio::task::spawn_blocking(move || engine.load(&bytes))
            .await
            .map_err(|e| RegistryError::Task { digest: digest.clone(), reason: e.to_string() })?
            .map_err(|source| RegistryError::Refused { digest: digest.clone(), source })?;
        self.inner.modules.lock().unwrap_or_else(|p| p.into_inner()).insert(digest, loaded.clone());
        Ok(loaded)
    }

    /// Starts a stored pipeline that should run, recording why when it cannot.
    async fn start(&self, managed: &mut Managed) {
        let name = managed.record.spec.name.clone();
        let result = match self.module(managed.record.spec.module.as_str()).await {
            Ok(module) => self.start_with(managed, module).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => managed.failure = None,
            Err(e) => {
                tracing::error!(pipeline = %name, "pipeline not started: {e}; trying again every {RESTART_INTERVAL:?}");
                managed.failure = Some(e.to_string());
            }
        }
    }

    async fn start_with(&self, managed: &mut Managed, module: Module) -> Result<(), ManagerError> {
        let spec = managed.record.spec.clone();
        if self.shutting_down() {
            return Err(ManagerError::Start { name: spec.name, reason: "the runtime is shutting down".into() });
        }
        let start_error = |e: anyhow::Error| ManagerError::Start { name: spec.name.clone(), reason: format!("{e:#}") };
        if self.inner.create_topics.is_some() {
            self.check_topics(&spec).await?;
        }
        let cache = match &managed.cache {
            Some(cache) => cache.clone(),
            None => self.cache_for(&spec).await.map_err(start_error)?,
        };
        let options = StartOptions {
            revision: managed.record.revision(),
            stats: managed.stats.clone(),
            node_id: Some(self.inner.node_id.clone()),
        };
        let pipeline =
            Pipeline::start_with(spec.clone(), &self.inner.kafka, &self.inner.engine, module, cache.clone(), options)
                .await
                .map_err(start_error)?;
        managed.cache = Some(cache);
        managed.running = Some(pipeline);
        managed.failure = None;
        Ok(())
    }

    /// Creates missing topics when configured to, else checks they exist.
    async fn check_topics(&self, spec: &PipelineSpec) -> Result<(), ManagerError> {
        let (spec, kafka, create) = (spec.clone(), self.inner.kafka.clone(), self.inner.create_topics.clone());
        let name = spec.name.clone();
        tokio::task::spawn_blocking(move || match create {
            Some(create) => {
                for topic in source::missing_topics(&spec.name, &spec.topics(), &kafka)? {
                    create(&topic)?;
                    tracing::info!(pipeline = %spec.name, %topic, "created a missing topic");
                }
                Ok(())
            }
            None => source::check_topics_exist(&spec.name, &spec.topics(), &kafka),
        })
        .await
        .map_err(|e| ManagerError::Start { name: name.clone(), reason: e.to_string() })?
        .map_err(|e| ManagerError::Start { name, reason: format!("{e:#}") })
    }

    /// The pipeline's cache. Every plain `memory://` pipeline of this process shares one
    /// in-memory backend, so pipelines that name the same namespace share keys, as they would
    /// on Redis; `memory://?capacity_mb=N` gets a backend of its own.
    async fn cache_for(&self, spec: &PipelineSpec) -> anyhow::Result<Cache> {
        let backend: Arc<dyn CacheBackend> = if spec.cache.is_shared_memory() {
            self.inner.memory.clone()
        } else {
            // Shown without user info.
            spec.cache.url().connect().await.map_err(|e| anyhow::anyhow!("cache {}: {e}", spec.cache))?
        };
        Ok(Cache::new(backend, Namespace::new(spec.namespace())?).owned_by(&spec.name))
    }

    async fn save(&self, record: &PipelineRecord) -> Result<(), ManagerError> {
        let (store, record) = (self.inner.store.clone(), record.clone());
        blocking(move || store.save(&record)).await
    }
}

/// The file in the data directory a runtime holds locked while it runs.
pub const DATA_DIR_LOCK_FILE: &str = "lock";

/// Locks the data directory for this process: two runtimes on one directory would share a
/// node id (and so one consumer group member) and overwrite each other's records.
fn lock_data_dir(data_dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    let path = data_dir.join(DATA_DIR_LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "the data directory {} is in use by another sluice process; give each runtime its own (--data-dir)",
            data_dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
    }
}

/// The digest of a pipeline as a config file declares it (its module as a digest).
fn declaration_digest(spec: &PipelineSpec) -> String {
    use sha2::Digest as _;
    let json = serde_json::to_vec(spec).unwrap_or_default();
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(&json)))
}

/// Whether the cache a pipeline uses changes between two specs.
fn settings_cache_changed(old: &PipelineSpec, new: &PipelineSpec) -> bool {
    old.cache != new.cache || old.namespace() != new.namespace()
}

fn not_found(name: &str) -> ManagerError {
    ManagerError::NotFound { name: name.to_string() }
}

/// Runs a store call on the blocking pool.
async fn blocking(work: impl FnOnce() -> Result<(), StoreError> + Send + 'static) -> Result<(), ManagerError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError { action: "store task failed".into(), source: std::io::Error::other(e.to_string()) })?
        .map_err(ManagerError::Store)
}

/// Tries again, every [`RESTART_INTERVAL`], to start the pipelines that should run but do
/// not; ends with the manager.
async fn restart_failed(inner: std::sync::Weak<Inner>) {
    loop {
        tokio::time::sleep(RESTART_INTERVAL).await;
        let Some(inner) = inner.upgrade() else { return };
        let manager = PipelineManager { inner };
        if manager.shutting_down() {
            return;
        }
        let mut pipelines = manager.inner.pipelines.lock().await;
        for managed in pipelines.values_mut() {
            if managed.record.state == DesiredState::Running && managed.running.is_none() {
                manager.start(managed).await;
                if managed.running.is_some() {
                    tracing::info!(pipeline = %managed.record.spec.name, "pipeline started after an earlier failure");
                }
            }
        }
    }
}
