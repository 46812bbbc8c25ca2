//! The pipeline manager: the pipelines of one runtime process and every operation on them.
//!
//! The manager owns the running [`Pipeline`]s, the engine they share, the module registry and
//! the pipeline store in the data directory. Every change (create, update, reload, rollback,
//! pause, resume, delete) is applied to the running pipeline first and then written to the
//! store, so that a restart ([`PipelineManager::open`]) brings back every pipeline as it was,
//! running or paused, resuming from its committed offsets.
//!
//! Locking is per pipeline. A short-held map (a std `RwLock`, never held across an `.await`)
//! leads from each name to the pipeline's slot. A slot has an async lock that serialises the
//! changes of that one pipeline, held across its start, stop and store writes, and a view:
//! a copy of its record and state, with a handle on the running pipeline's live counters,
//! published when each change ends (and at its steps). Reads ([`PipelineManager::list`],
//! [`PipelineManager::get`], [`PipelineManager::statuses`]) take only the map and the views,
//! so they never wait for a change or a broker, except that a report waits at most
//! [`OFFSETS_TIMEOUT`] for its consumer group's offsets. A change of one pipeline never waits
//! for another's; the retry of pipelines that cannot start ([`RESTART_INTERVAL`]) takes each
//! one's lock in turn, skipping one a change holds. A create takes the slot of its name (made
//! if missing) before it starts anything, so two creates of one name are serialised and a
//! shutdown sees every pipeline; a failed create and a delete take the slot out of the map,
//! and a change that waited on a slot taken out looks the name up again. Module deletes and
//! applies meet at module pins (an apply pins its module until its record names it), so of a delete and an apply of one module only
//! one succeeds.
//!
//! A pause, delete or update waits for the pipeline to stop at most [`STOP_TIMEOUT`]
//! ([`ManagerConfig::stop_timeout`]); past it the call fails with
//! [`ManagerError::StopTimeout`], the stop goes on in the background, and the pipeline shows
//! as [`PipelineState::Stopping`] until it ends; its next start waits for it.
//!
//! A module change on a running pipeline is a hot reload: the new module is loaded (compiled
//! and checked) before anything changes, then each partition worker switches to it between
//! two batches ([`Pipeline::reload`]). Any other change of the spec restarts the pipeline,
//! which commits what it processed and resumes from there.

use std::collections::HashSet;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};
use serde::Deserialize;
use serde::Serialize;

use crate::cluster::{ClusterConfig, CommitError, Control, Event};
use crate::function_log::FunctionLog;
use crate::registry::module_digest;
use crate::registry::pipelines::RevisionCause;
use crate::registry::pipelines::{
    DEFAULT_KEEP_VERSIONS, DesiredState, PipelineRecord, PipelineStore, Revision, StoreError,
};
use crate::registry::{ModuleInfo, ModuleRegistry, RegistryError, Stored, canonical_digest};
use crate::spec::{PipelineSpec, SpecError, StartPosition};
use crate::{Pipeline, PipelineCacheStatus, PipelineObserver, PipelineStats, PipelineStatus, StartOptions};
use sluice_cache::{Cache, CacheBackend, MemoryCache, Namespace};
use sluice_engine::{Engine, EngineConfig, Limits, Module};
use sluice_kafka::KafkaConfig;
use sluice_kafka::source::{self, PartitionOffsets};

/// How often pipelines that should run but could not start (the broker was down at start-up,
/// say) are tried again.
pub const RESTART_INTERVAL: Duration = Duration::from_secs(5);

/// The longest a pause, delete or update waits for a pipeline to stop, by default
/// ([`ManagerConfig::stop_timeout`]). Above the stop's own budgets, which bound it even with
/// the cluster gone: [`crate::STOP_ACK_GRACE`], [`crate::STOP_COMMIT_TIMEOUT`]
/// and [`crate::STOP_FLUSH_TIMEOUT`], 5 s each, and a second to leave the group.
/// Past it the call fails with [`ManagerError::StopTimeout`] and the stop goes on in the
/// background, the pipeline shown as [`PipelineState::Stopping`].
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest a pipeline report ([`PipelineManager::get`]) waits for the broker's answer
/// about its consumer group's offsets; past it the report comes without them, its
/// `offsets_error` saying so. The lookup goes on, and reports asked meanwhile wait for it
/// rather than start another.
pub const OFFSETS_TIMEOUT: Duration = Duration::from_millis(500);

/// How long after it began a finished lookup of a group's offsets still answers reports, so
/// that a lookup slower than [`OFFSETS_TIMEOUT`] reaches the next report rather than being
/// begun again.
const OFFSETS_REUSE: Duration = Duration::from_secs(1);

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
    /// The longest a pause, delete or update waits for a pipeline to stop. Default
    /// [`STOP_TIMEOUT`].
    pub stop_timeout: Duration,
    /// Cluster mode: the registry is kept in these Kafka topics, shared by every node of the
    /// cluster, rather than in the data directory. `None`: this runtime's own registry, on disk.
    pub cluster: Option<ClusterConfig>,
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
            stop_timeout: STOP_TIMEOUT,
            cluster: None,
        }
    }
}

impl From<CommitError> for ManagerError {
    fn from(error: CommitError) -> Self {
        match error {
            CommitError::Conflict { .. } => ManagerError::Conflict(error.to_string()),
            CommitError::Log { .. } => ManagerError::Kafka(error.to_string()),
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
    /// The pipeline did not stop within the stop time limit; its stop goes on.
    #[error(
        "pipeline {name} did not stop within {limit:?} (the stop time limit); it is `stopping` until its stop ends, \
         then paused if it was paused or deleted, or started again if it was updated; repeat the call then"
    )]
    StopTimeout {
        /// The pipeline.
        name: String,
        /// The limit ([`ManagerConfig::stop_timeout`]).
        limit: Duration,
    },
}

/// What [`PipelineManager::apply`] did: `created`, a new pipeline was created and started;
/// `reloaded`, only the module changed and the running pipeline switched to it between two
/// batches, without stopping; `updated`, other settings changed and the pipeline restarted with
/// them (a paused one starts with them when resumed); `unchanged`, the spec was the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema, Deserialize)]
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

/// What a reload or rollback did: the pipeline after the change, with what was applied.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, Deserialize)]
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

/// A pipeline's state as the runtime sees it: `running`, consuming and processing; `paused`,
/// paused by an operator; `failed`, should run but could not start (tried again every 5 s);
/// `stalled`, running but owning no partition while its group has records waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema, Deserialize)]
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
    /// Stopping: a pause, delete or update is waiting for it to stop, or its stop outlasted
    /// the stop time limit ([`STOP_TIMEOUT`]) and goes on.
    Stopping,
}

/// One pipeline, briefly, for listings.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, Deserialize)]
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
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, Deserialize)]
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
    /// In cluster mode, each node's share of the pipeline, from its last heartbeat; empty
    /// outside a cluster.
    #[serde(default)]
    pub nodes: Vec<crate::cluster::status::NodeShare>,
    /// In cluster mode, how far the current revision has reached: complete when every node up
    /// runs it and every partition they own switched to it.
    #[serde(default)]
    pub rollout: Option<crate::cluster::status::Rollout>,
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
    /// Every pipeline's slot, by name. Held only to find, add or remove a slot, never across
    /// an `.await`: a change holds its own pipeline's lock, not this one.
    pipelines: RwLock<BTreeMap<String, Arc<PipelineSlot>>>,
    /// The modules applies in progress are about to use, and those being deleted.
    pins: Mutex<ModulePins>,
    /// See [`ManagerConfig::stop_timeout`].
    stop_timeout: Duration,
    /// The cluster's control topics, in cluster mode: changes are committed there rather than
    /// saved in `store`.
    control: Option<Arc<Control>>,
    /// Held while a module is read from the cluster, so that one module is read once.
    fetching: tokio::sync::Mutex<()>,
    /// In cluster mode, this node's heartbeats and the cluster's membership.
    membership: std::sync::OnceLock<crate::cluster::status::Membership>,
}

/// What keeps a module delete and an apply of that module from both succeeding: an apply pins
/// its module before it checks that the module is stored and unpins it once the pipeline's
/// record names it; a delete refuses a pinned module and marks it while it deletes, and an
/// apply refuses a module so marked.
#[derive(Default)]
struct ModulePins {
    /// Applies in progress, by module digest.
    applying: HashMap<String, usize>,
    /// Modules being deleted.
    deleting: HashSet<String>,
}

/// An apply's pin on its module ([`ModulePins`]), released on drop.
struct ModulePin<'a> {
    inner: &'a Inner,
    digest: String,
}

impl Drop for ModulePin<'_> {
    fn drop(&mut self) {
        let mut pins = self.inner.pins.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = pins.applying.get_mut(&self.digest) {
            *count -= 1;
            if *count == 0 {
                pins.applying.remove(&self.digest);
            }
        }
    }
}

/// One pipeline's place in the manager: the lock its changes take, and what reads see.
#[derive(Default)]
struct PipelineSlot {
    /// The pipeline, held by the change in progress (start, stop, update, delete) for as long
    /// as it takes. `None` while the pipeline is being created, or once it is deleted.
    change: Arc<tokio::sync::Mutex<Option<Managed>>>,
    /// What reads see, published by every change when it ends and at its steps; `None` until
    /// the pipeline is created and after it is deleted. Held only to copy an `Arc`.
    view: Mutex<Option<Arc<View>>>,
    /// The last broker lookup of the consumer group's offsets, with when it began: shared
    /// by the reports that ask while it is under way or within [`OFFSETS_REUSE`] of its start.
    offsets: Mutex<Option<(std::time::Instant, OffsetsLookup)>>,
}

/// A lookup of a consumer group's offsets on the broker, shared by whoever waits for it.
type OffsetsLookup = Shared<BoxFuture<'static, Result<Vec<PartitionOffsets>, String>>>;

impl PipelineSlot {
    fn view(&self) -> Option<Arc<View>> {
        self.view.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Makes `managed` what reads see.
    fn publish(&self, managed: Option<&Managed>) {
        let view = managed.map(|m| Arc::new(m.view()));
        *self.view.lock().unwrap_or_else(|p| p.into_inner()) = view;
    }

    /// The lookup of the group's offsets under way or just done, or a new one. A report that
    /// gave up waiting leaves the answer to the next one.
    fn offsets_lookup(&self, spec: &PipelineSpec, kafka: &KafkaConfig) -> OffsetsLookup {
        let mut slot = self.offsets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, lookup)) =
            slot.as_ref().filter(|(began, lookup)| lookup.peek().is_none() || began.elapsed() < OFFSETS_REUSE)
        {
            return lookup.clone();
        }
        let (spec, kafka) = (spec.clone(), kafka.clone());
        let lookup = async move {
            match tokio::task::spawn_blocking(move || source::group_offsets(&spec.consumer_spec(), &kafka)).await {
                Ok(Ok(offsets)) => Ok(offsets),
                Ok(Err(e)) => Err(format!("{e:#}")),
                Err(e) => Err(format!("offset task failed: {e}")),
            }
        }
        .boxed()
        .shared();
        *slot = Some((std::time::Instant::now(), lookup.clone()));
        lookup
    }
}

/// A change of one pipeline in progress: holds its slot's lock, and publishes what reads see
/// when it ends, however it ends. A slot left without a pipeline (a failed create, a delete)
/// leaves the manager with it.
struct Change<'a> {
    manager: &'a PipelineManager,
    name: String,
    slot: Arc<PipelineSlot>,
    guard: tokio::sync::OwnedMutexGuard<Option<Managed>>,
}

impl Change<'_> {
    /// The slot, to publish a step, and the pipeline.
    fn parts(&mut self) -> (&PipelineSlot, &mut Option<Managed>) {
        (&self.slot, &mut self.guard)
    }

    /// The pipeline, or [`ManagerError::NotFound`].
    fn managed(&mut self) -> Result<(&PipelineSlot, &mut Managed), ManagerError> {
        let name = &self.name;
        let managed = self.guard.as_mut().ok_or_else(|| not_found(name))?;
        Ok((&self.slot, managed))
    }
}

impl Drop for Change<'_> {
    fn drop(&mut self) {
        self.slot.publish(self.guard.as_ref());
        if self.guard.is_none() {
            let mut pipelines = self.manager.inner.pipelines.write().unwrap_or_else(|p| p.into_inner());
            if pipelines.get(&self.name).is_some_and(|s| Arc::ptr_eq(s, &self.slot)) {
                pipelines.remove(&self.name);
            }
        }
    }
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
    /// A stop still under way because it outlasted [`ManagerConfig::stop_timeout`].
    stopping: Option<Stopping>,
    /// In cluster mode, the generation of the registry log's record that `record` is
    /// ([`crate::cluster::state`]); 0 otherwise.
    generation: u64,
}

/// A pipeline's stop, run as a task of its own so that a change waits for it only so long.
struct Stopping {
    task: tokio::task::JoinHandle<()>,
    /// Set when the stop has finished.
    done: Arc<AtomicBool>,
}

/// How a pipeline stops (see [`Pipeline::stop`] and [`Pipeline::stop_for_restart`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopKind {
    /// It leaves its consumer group: a pause, a delete.
    Leave,
    /// It starts again at once as the same group member: an update.
    Restart,
}

impl Managed {
    fn new(record: PipelineRecord) -> Managed {
        Managed {
            record,
            running: None,
            stats: Arc::default(),
            cache: None,
            failure: None,
            stopping: None,
            generation: 0,
        }
    }

    fn view(&self) -> View {
        View {
            record: self.record.clone(),
            running: self.running.as_ref().map(Pipeline::observer),
            stopping: self.stopping.as_ref().map(|s| s.done.clone()),
            stats: self.stats.clone(),
            cache: self.cache.clone(),
            failure: self.failure.clone(),
        }
    }
}

/// A pipeline as reads see it: a copy made at the end (or a step) of its last change, and a
/// handle on the running pipeline's live counters.
struct View {
    record: PipelineRecord,
    running: Option<PipelineObserver>,
    /// Set while a stop that outlasted its time limit is under way: `true` once it finished.
    stopping: Option<Arc<AtomicBool>>,
    stats: Arc<PipelineStats>,
    cache: Option<Cache>,
    failure: Option<String>,
}

impl View {
    fn state(&self) -> PipelineState {
        if self.stopping.as_ref().is_some_and(|done| !done.load(Ordering::SeqCst)) {
            return PipelineState::Stopping;
        }
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
            backend: self.cache.as_ref().map_or("none", Cache::kind).into(),
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

    /// Whether the retry loop should try to start it.
    fn should_start(&self) -> bool {
        self.record.state == DesiredState::Running && self.running.is_none()
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
        let (control, events) = match &config.cluster {
            Some(cluster) => {
                cluster.validate().map_err(anyhow::Error::msg)?;
                // The registry is the cluster's: nothing runs until it is read, however long
                // the cluster takes to answer.
                let mut failed = false;
                let (control, events) = loop {
                    match Control::join(&config.kafka, cluster.clone(), &node_id).await {
                        Ok(joined) => break joined,
                        Err(e) if !failed => {
                            tracing::warn!(
                                topic = %cluster.registry_topic,
                                "cannot read the registry from the cluster: {e:#}; trying again every {RESTART_INTERVAL:?}"
                            );
                            failed = true;
                        }
                        Err(e) => tracing::debug!("cannot read the registry from the cluster: {e:#}"),
                    }
                    tokio::time::sleep(RESTART_INTERVAL).await;
                };
                if failed {
                    tracing::info!(topic = %cluster.registry_topic, "read the registry from the cluster after all");
                }
                (Some(control), Some(events))
            }
            None => (None, None),
        };
        let records: Vec<(PipelineRecord, u64)> = match &control {
            None => store.load_all()?.into_iter().map(|record| (record, 0)).collect(),
            Some(control) => {
                import_store(control, &store, &registry).await?;
                control.restate_leftovers().await;
                control.with_state(|state| {
                    state
                        .pipelines()
                        .filter_map(|(_, entry)| entry.record.clone().map(|record| (record, entry.generation)))
                        .collect()
                })
            }
        };
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
                pipelines: RwLock::default(),
                pins: Mutex::default(),
                stop_timeout: config.stop_timeout,
                control,
                fetching: tokio::sync::Mutex::new(()),
                membership: std::sync::OnceLock::new(),
            }),
        };
        for (record, generation) in records {
            let name = record.spec.name.clone();
            let mut managed = Managed::new(record);
            managed.generation = generation;
            if managed.record.state == DesiredState::Running {
                manager.start(&mut managed).await;
            }
            tracing::info!(pipeline = %name, state = ?managed.view().state(), revision = managed.record.revision(), "pipeline restored");
            let slot = PipelineSlot::default();
            slot.publish(Some(&managed));
            *slot.change.lock().await = Some(managed);
            manager.inner.pipelines.write().unwrap_or_else(|p| p.into_inner()).insert(name, Arc::new(slot));
        }
        tokio::spawn(restart_failed(Arc::downgrade(&manager.inner)));
        if let Some(events) = events {
            tokio::spawn(follow_cluster(Arc::downgrade(&manager.inner), events));
        }
        if let Some(control) = &manager.inner.control {
            manager.start_membership(control, None).await?;
        }
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
        if let Some(view) = self.view(&spec.name) {
            let record = &view.record;
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
        let (spec, module, _pin) = self.prepare(spec).await?;
        let mut change = self.change_or_create(&spec.name).await;
        let outcome = match self.apply_locked(&mut change, spec.clone(), module, RevisionCause::Deploy).await {
            Ok((applied, _)) => Declared::Applied(applied),
            Err(ManagerError::Start { reason, .. }) => {
                let (_, managed) = change.parts();
                if managed.is_none() {
                    tracing::error!(pipeline = %spec.name, "pipeline not started: {reason}; trying again every {RESTART_INTERVAL:?}");
                    let mut failed = Managed::new(PipelineRecord::new(spec.clone()));
                    failed.failure = Some(reason.clone());
                    *managed = Some(failed);
                }
                Declared::Failed(reason)
            }
            Err(e) => return Err(e),
        };
        if let (_, Some(managed)) = change.parts()
            && managed.record.declared.as_deref() != Some(declared.as_str())
        {
            let mut record = managed.record.clone();
            record.declared = Some(declared);
            self.save(&mut managed.generation, &record).await?;
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
        let stored = self.inner.registry.put(bytes.clone()).await?;
        if let Some(control) = &self.inner.control {
            // In a cluster, the module is stored in Kafka for the other nodes.
            control.publish_module(&stored.info, &bytes).await?;
        }
        self.keep_compiled(&stored);
        Ok(stored)
    }

    /// Switches the pipeline to the module `digest` (in the registry) without stopping it.
    pub async fn reload(&self, name: &str, digest: &str) -> Result<ModuleChange, ManagerError> {
        self.sync(name).await;
        let view = self.view(name).ok_or_else(|| not_found(name))?;
        let spec = PipelineSpec { module: module_digest(digest)?, ..view.record.spec.clone() };
        let (applied, superseded) = self.apply_with_cause(spec, RevisionCause::Reload).await?;
        Ok(ModuleChange { applied, superseded, pipeline: self.summary(name).await? })
    }

    /// Switches the pipeline back to a kept module version: the newest one before the current
    /// that runs another module, or revision `to`. The rollback is itself a new revision, so
    /// a second rollback undoes the first.
    pub async fn rollback(&self, name: &str, to: Option<u64>) -> Result<ModuleChange, ManagerError> {
        self.sync(name).await;
        let spec = {
            let view = self.view(name).ok_or_else(|| not_found(name))?;
            let record = &view.record;
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
    ///
    /// The pause is saved first. A stop that outlasts [`ManagerConfig::stop_timeout`] fails
    /// the call with [`ManagerError::StopTimeout`]; the pipeline is then `stopping` until the
    /// stop ends, and `paused` after.
    pub async fn pause(&self, name: &str) -> Result<PipelineSummary, ManagerError> {
        let mut change = self.change(name).await?;
        let (slot, managed) = change.managed()?;
        if managed.record.state != DesiredState::Paused {
            let mut record = managed.record.clone();
            record.state = DesiredState::Paused;
            self.save(&mut managed.generation, &record).await?;
            managed.record = record;
            managed.failure = None;
            self.stop_within_limit(slot, managed, StopKind::Leave).await?;
            tracing::info!(pipeline = %name, "pipeline paused");
        } else {
            // Paused before, but its stop outlasted the limit: wait for it again.
            self.finish_stopping(managed).await?;
        }
        Ok(managed.view().summary())
    }

    /// Starts a paused (or failed) pipeline again, from its committed offsets. A running
    /// pipeline's blocked partitions (the `block` policy, or a worker that crashed at the same
    /// record again and again) try their record again.
    pub async fn resume(&self, name: &str) -> Result<PipelineSummary, ManagerError> {
        let mut change = self.change(name).await?;
        let (_, managed) = change.managed()?;
        if let Some(running) = &managed.running {
            let blocked = running.status().blocked_partitions();
            if blocked > 0 {
                running.unblock();
                tracing::info!(pipeline = %name, blocked, "blocked partitions resumed: each tries its record again");
            }
        }
        if managed.running.is_none() {
            let module = self.module(managed.record.spec.module.as_str()).await?;
            self.start_with(managed, module).await?;
            if managed.record.state != DesiredState::Running {
                let mut record = managed.record.clone();
                record.state = DesiredState::Running;
                self.save(&mut managed.generation, &record).await?;
                managed.record = record;
            }
            tracing::info!(pipeline = %name, "pipeline resumed");
        }
        Ok(managed.view().summary())
    }

    /// Stops the pipeline and forgets it. Its consumer group and committed offsets stay on
    /// the cluster, so a pipeline created again with the same name resumes from them.
    ///
    /// A stop that outlasts [`ManagerConfig::stop_timeout`] fails the call with
    /// [`ManagerError::StopTimeout`] and leaves the pipeline paused (saved so), `stopping`
    /// until the stop ends; the delete can then be repeated.
    pub async fn delete(&self, name: &str) -> Result<(), ManagerError> {
        let mut change = self.change(name).await?;
        let (slot, managed) = change.managed()?;
        if let Err(e) = self.stop_within_limit(slot, managed, StopKind::Leave).await {
            if managed.record.state != DesiredState::Paused {
                let mut record = managed.record.clone();
                record.state = DesiredState::Paused;
                managed.record.state = DesiredState::Paused;
                if let Err(save) = self.save(&mut managed.generation, &record).await {
                    tracing::error!(pipeline = %name, "cannot save it paused after its stop outlasted the limit: {save}");
                }
            }
            return Err(e);
        }
        let mut generation = managed.generation;
        if let Err(e) = self.remove(&mut generation, name).await {
            // Still in the registry: started again by the retry loop, unless paused.
            managed.generation = generation;
            return Err(e);
        }
        let (_, managed) = change.parts();
        *managed = None;
        Ok(())
    }

    /// Commits new offsets for a paused pipeline's consumer group; it resumes from them.
    pub async fn reset_offsets(&self, name: &str, to: StartPosition) -> Result<Vec<(String, i32, i64)>, ManagerError> {
        to.validate()
            .map_err(|reason| SpecError { pipeline: name.to_string(), reason: format!("offsets reset: {reason}") })?;
        let mut change = self.change(name).await?;
        let (_, managed) = change.managed()?;
        if managed.running.is_some() || managed.record.state != DesiredState::Paused {
            return Err(ManagerError::Conflict(format!(
                "pipeline {name} is running: pause it before resetting its offsets"
            )));
        }
        // Its consumer must be gone: Kafka refuses commits from outside a group with members.
        self.finish_stopping(managed).await?;
        let (spec, kafka) = (managed.record.spec.clone(), self.inner.kafka.clone());
        tokio::task::spawn_blocking(move || source::reset_offsets(&spec.consumer_spec(), &kafka, &to))
            .await
            .map_err(|e| ManagerError::Kafka(format!("pipeline {name}: offset task failed: {e}")))?
            .map_err(|e| ManagerError::Kafka(format!("{e:#}")))
    }

    /// Every pipeline, by name. Never waits for a change or the broker.
    pub async fn list(&self) -> Vec<PipelineSummary> {
        self.views().iter().map(|v| v.summary()).collect()
    }

    /// One pipeline, briefly. Never waits for a change or the broker.
    pub async fn summary(&self, name: &str) -> Result<PipelineSummary, ManagerError> {
        self.view(name).map(|v| v.summary()).ok_or_else(|| not_found(name))
    }

    /// One pipeline's function log on this node (what its function said and why its records
    /// failed). Never waits for a change.
    pub fn function_log(&self, name: &str) -> Result<Arc<FunctionLog>, ManagerError> {
        self.view(name).map(|v| v.stats.function_log().clone()).ok_or_else(|| not_found(name))
    }

    /// One pipeline's counters and partitions, without asking the broker anything.
    pub async fn get_status(&self, name: &str) -> Result<PipelineStatus, ManagerError> {
        self.view(name).map(|v| v.status()).ok_or_else(|| not_found(name))
    }

    /// One pipeline in full, with its consumer group's offsets asked of the broker. Never
    /// waits for a change; waits for the broker at most [`OFFSETS_TIMEOUT`], after which the
    /// report comes without offsets and `offsets_error` says why.
    pub async fn get(&self, name: &str) -> Result<PipelineReport, ManagerError> {
        let slot = self.slot(name).ok_or_else(|| not_found(name))?;
        let view = slot.view().ok_or_else(|| not_found(name))?;
        let mut report = PipelineReport {
            name: name.to_string(),
            state: view.state(),
            error: view.failure.clone(),
            revision: view.record.revision(),
            revisions: view.record.revisions.clone(),
            // The cache URL's user info stays in the stored spec only.
            spec: PipelineSpec { cache: view.record.spec.cache.redacted(), ..view.record.spec.clone() },
            status: view.status(),
            offsets: Vec::new(),
            offsets_error: None,
            nodes: self.node_shares(name),
            rollout: None,
        };
        if self.inner.control.is_some() {
            report.rollout = Some(crate::cluster::status::Rollout::of(report.revision, &report.nodes));
        }
        let lookup = slot.offsets_lookup(&view.record.spec, &self.inner.kafka);
        match tokio::time::timeout(OFFSETS_TIMEOUT, lookup).await {
            Ok(Ok(offsets)) => report.offsets = offsets,
            Ok(Err(e)) => report.offsets_error = Some(e),
            Err(_) => {
                report.offsets_error =
                    Some(format!("the broker did not answer within {OFFSETS_TIMEOUT:?} (OFFSETS_TIMEOUT)"))
            }
        }
        Ok(report)
    }

    /// Every pipeline's status, for metrics. Never waits for a change or the broker.
    pub async fn statuses(&self) -> Vec<(PipelineSummary, PipelineStatus)> {
        self.views().iter().map(|v| (v.summary(), v.status())).collect()
    }

    /// The pipelines whose kept versions use the module `digest`.
    pub async fn module_users(&self, digest: &str) -> Result<Vec<String>, ManagerError> {
        let digest = canonical_digest(digest)?;
        Ok(self.users_of(&digest))
    }

    /// Deletes the module `digest` from the registry, unless a pipeline runs or keeps it.
    /// Of a delete and an apply of one module, only one succeeds: the delete
    /// refuses a module an apply in progress has pinned, and an apply refuses a module being
    /// deleted or no longer stored.
    pub async fn delete_module(&self, digest: &str) -> Result<(), ManagerError> {
        let digest = canonical_digest(digest)?;
        {
            let mut pins = self.inner.pins.lock().unwrap_or_else(|p| p.into_inner());
            let mut users = self.users_of(&digest);
            if pins.applying.contains_key(&digest) {
                users.push("(a deploy in progress)".to_string());
            }
            if !users.is_empty() {
                return Err(ManagerError::Conflict(format!(
                    "module {digest} is used by pipelines {users:?} (as the current or a kept version); delete or update them first"
                )));
            }
            if !pins.deleting.insert(digest.clone()) {
                return Err(ManagerError::Conflict(format!("module {digest} is being deleted already")));
            }
        }
        let mut deleted = self.inner.registry.delete(&digest).await;
        if let Some(control) = &self.inner.control {
            let hex = digest.trim_start_matches(sluice_contract::DIGEST_PREFIX);
            let in_cluster = control.with_state(|s| s.module(hex).is_some_and(|m| m.info.is_some()));
            if in_cluster && (deleted.is_ok() || matches!(deleted, Err(RegistryError::NotFound { .. }))) {
                deleted = control.unpublish_module(hex).await.map_err(|e| RegistryError::Task {
                    digest: digest.clone(),
                    reason: format!("cannot delete it from the cluster: {e}"),
                });
            }
        }
        if deleted.is_ok() {
            self.inner.modules.lock().unwrap_or_else(|p| p.into_inner()).remove(&digest);
        }
        self.inner.pins.lock().unwrap_or_else(|p| p.into_inner()).deleting.remove(&digest);
        Ok(deleted?)
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
        // A pipeline created from now on is in this list, or its start sees the flag.
        let slots: Vec<(String, Arc<PipelineSlot>)> = {
            let pipelines = self.inner.pipelines.read().unwrap_or_else(|p| p.into_inner());
            pipelines.iter().map(|(name, slot)| (name.clone(), slot.clone())).collect()
        };
        let stopping = slots.into_iter().map(|(name, slot)| async move {
            // Waits for the change in progress on this pipeline, if any.
            let mut change = self.lock(name, slot).await;
            let (slot, managed) = change.parts();
            let Some(managed) = managed else { return };
            if let Some(pipeline) = managed.running.take() {
                slot.publish(Some(managed));
                pipeline.stop().await;
            }
            if let Some(stopping) = managed.stopping.as_mut() {
                let _ = (&mut stopping.task).await;
            }
            managed.stopping = None;
        });
        futures_util::future::join_all(stopping).await;
        self.leave_membership().await;
        if let Some(control) = &self.inner.control {
            control.leave().await;
        }
    }

    fn shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }

    /// The slot of pipeline `name`, if there is one.
    fn slot(&self, name: &str) -> Option<Arc<PipelineSlot>> {
        self.inner.pipelines.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    /// Pipeline `name` as reads see it.
    fn view(&self, name: &str) -> Option<Arc<View>> {
        self.slot(name)?.view()
    }

    /// Every pipeline as reads see it, by name.
    fn views(&self) -> Vec<Arc<View>> {
        let slots: Vec<Arc<PipelineSlot>> =
            self.inner.pipelines.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        slots.iter().filter_map(|s| s.view()).collect()
    }

    /// The pipelines whose records name the module `digest`, as current or kept version.
    fn users_of(&self, digest: &str) -> Vec<String> {
        self.views()
            .iter()
            .filter(|v| v.record.revisions.iter().any(|r| r.module.as_str() == digest))
            .map(|v| v.record.spec.name.clone())
            .collect()
    }

    /// Takes the lock of `slot`, pipeline `name`'s, waiting for the change in progress.
    async fn lock(&self, name: String, slot: Arc<PipelineSlot>) -> Change<'_> {
        let guard = slot.change.clone().lock_owned().await;
        Change { manager: self, name, slot, guard }
    }

    /// Whether `slot` is pipeline `name`'s slot now (not one deleted meanwhile).
    fn is_current(&self, name: &str, slot: &Arc<PipelineSlot>) -> bool {
        self.inner.pipelines.read().unwrap_or_else(|p| p.into_inner()).get(name).is_some_and(|s| Arc::ptr_eq(s, slot))
    }

    /// A change of the existing pipeline `name`.
    async fn change(&self, name: &str) -> Result<Change<'_>, ManagerError> {
        if let Some(control) = &self.inner.control {
            control.read_to_end().await;
        }
        if self.in_log(name) {
            // Made on another node and not applied here yet: it is, under its lock.
            let change = self.change_or_create(name).await;
            return if change.guard.is_some() { Ok(change) } else { Err(not_found(name)) };
        }
        loop {
            let slot = self.slot(name).ok_or_else(|| not_found(name))?;
            let mut change = self.lock(name.to_string(), slot).await;
            if self.is_current(name, &change.slot) {
                self.catch_up(&mut change).await;
                if change.guard.is_none() {
                    return Err(not_found(name));
                }
                return Ok(change);
            }
        }
    }

    /// A change of pipeline `name`, which is created (a slot without a pipeline yet) if
    /// missing. Two creates of one name are serialised by the slot's lock: the second finds
    /// the pipeline the first made.
    async fn change_or_create(&self, name: &str) -> Change<'_> {
        loop {
            let slot = self
                .inner
                .pipelines
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .entry(name.to_string())
                .or_default()
                .clone();
            let mut change = self.lock(name.to_string(), slot).await;
            if self.is_current(name, &change.slot) {
                self.catch_up(&mut change).await;
                return change;
            }
        }
    }

    /// Checks `spec`, loads its module (before anything changes: a bad module leaves the
    /// pipeline as it is) and pins it against deletes until the returned pin is dropped.
    async fn prepare(&self, spec: PipelineSpec) -> Result<(PipelineSpec, Module, ModulePin<'_>), ManagerError> {
        spec.validate()?;
        let digest = spec.module.to_string();
        let module = self.module(&digest).await?;
        let pin = {
            let mut pins = self.inner.pins.lock().unwrap_or_else(|p| p.into_inner());
            if pins.deleting.contains(&digest) {
                return Err(RegistryError::NotFound { digest }.into());
            }
            *pins.applying.entry(digest.clone()).or_default() += 1;
            ModulePin { inner: &self.inner, digest: digest.clone() }
        };
        // Deleted since it was loaded? A delete that began after the pin refuses it.
        if self.inner.registry.info(&digest).await?.is_none() {
            return Err(RegistryError::NotFound { digest }.into());
        }
        Ok((spec, module, pin))
    }

    /// Applies `spec`; also returns the revision a module change superseded, if any.
    async fn apply_with_cause(
        &self,
        spec: PipelineSpec,
        cause: RevisionCause,
    ) -> Result<(Applied, Option<u64>), ManagerError> {
        if let Some(control) = &self.inner.control {
            control.read_to_end().await;
        }
        // Dropped after the change, so the record names the module before the pin goes.
        let (spec, module, _pin) = self.prepare(spec).await?;
        let mut change = self.change_or_create(&spec.name).await;
        self.apply_locked(&mut change, spec, module, cause).await
    }

    /// Applies `spec` (checked, its module loaded) under the pipeline's lock.
    async fn apply_locked(
        &self,
        change: &mut Change<'_>,
        spec: PipelineSpec,
        module: Module,
        cause: RevisionCause,
    ) -> Result<(Applied, Option<u64>), ManagerError> {
        let (slot, managed) = change.parts();
        let Some(managed) = managed else {
            let name = spec.name.clone();
            let mut created = Managed::new(PipelineRecord::new(spec));
            if self.inner.control.is_some() {
                return self.create_in_cluster(slot, managed, created, module).await;
            }
            self.start_with(&mut created, module).await?;
            let record = created.record.clone();
            if let Err(e) = self.save(&mut created.generation, &record).await {
                if let Err(stop) = self.stop_within_limit(slot, &mut created, StopKind::Leave).await {
                    tracing::error!(pipeline = %name, "{stop}");
                }
                return Err(e);
            }
            tracing::info!(pipeline = %name, "pipeline created");
            *managed = Some(created);
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
        let restart = settings_changed && managed.running.is_some();
        if restart {
            // Check the new settings where possible before stopping the running pipeline.
            self.check_topics(&record.spec).await?;
        }
        // In a cluster the log decides first: a change another node made at the same time
        // wins, and this one changes nothing here either. Every node then applies it.
        let clustered = self.inner.control.is_some();
        let old_record = managed.record.clone();
        if clustered {
            self.save(&mut managed.generation, &record).await?;
            managed.record = record.clone();
        }
        if restart {
            // Started again at once, as the same group member. A stop that outlasts its
            // limit leaves the old spec (in a cluster, the new one), `stopping`, then
            // restarted by the retry loop.
            self.stop_within_limit(slot, managed, StopKind::Restart).await?;
            managed.record = record.clone();
            if let Err(e) = self.start_with(managed, module).await {
                // Put the previous spec back, running (in a cluster, on every node).
                let mut previous = old_record;
                if clustered && let Err(again) = self.save(&mut managed.generation, &previous).await {
                    tracing::error!(pipeline = %old.name, "cannot put the previous spec back in the cluster: {again}");
                    previous = record;
                }
                managed.record = previous;
                let previous_module = self.module(managed.record.spec.module.as_str()).await?;
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
        if !clustered && let Err(e) = self.save(&mut managed.generation, &record).await {
            tracing::error!(pipeline = %record.spec.name, "the change is applied but not saved: {e}");
            return Err(e);
        }
        managed.record = record;
        Ok((if settings_changed { Applied::Updated } else { Applied::Reloaded }, superseded))
    }

    /// Creates pipeline `created` in a cluster: committed first, so that of two creates of one
    /// name on two nodes only the first in the log ever runs; then started here (and on every
    /// node). A pipeline that cannot start here is deleted from the cluster again, so a failed
    /// create leaves nothing behind, as on a single node.
    async fn create_in_cluster(
        &self,
        slot: &PipelineSlot,
        managed: &mut Option<Managed>,
        mut created: Managed,
        module: Module,
    ) -> Result<(Applied, Option<u64>), ManagerError> {
        let name = created.record.spec.name.clone();
        self.check_topics(&created.record.spec).await?;
        let record = created.record.clone();
        self.save(&mut created.generation, &record).await?;
        if let Err(e) = self.start_with(&mut created, module).await {
            let mut generation = created.generation;
            if let Err(undo) = self.remove(&mut generation, &name).await {
                tracing::error!(pipeline = %name, "cannot start, and cannot delete it from the cluster again: {undo}");
                created.failure = Some(e.to_string());
                created.generation = generation;
                *managed = Some(created);
            }
            if let Some(current) = managed.as_mut() {
                let _ = self.stop_within_limit(slot, current, StopKind::Leave).await;
            }
            return Err(e);
        }
        tracing::info!(pipeline = %name, "pipeline created");
        *managed = Some(created);
        Ok((Applied::Created, None))
    }

    /// Stops the running pipeline, if any, as `how`, waiting for it (and for a stop left from
    /// before) at most [`ManagerConfig::stop_timeout`]. Past that, the stop goes on in the
    /// background, the pipeline is `stopping`, and the call answers
    /// [`ManagerError::StopTimeout`].
    async fn stop_within_limit(
        &self,
        slot: &PipelineSlot,
        managed: &mut Managed,
        how: StopKind,
    ) -> Result<(), ManagerError> {
        if let Some(pipeline) = managed.running.take() {
            let done = Arc::new(AtomicBool::new(false));
            let finished = done.clone();
            let task = tokio::spawn(async move {
                match how {
                    StopKind::Leave => pipeline.stop().await,
                    StopKind::Restart => pipeline.stop_for_restart().await,
                }
                finished.store(true, Ordering::SeqCst);
            });
            managed.stopping = Some(Stopping { task, done });
            if how == StopKind::Leave {
                // Reads see it stopping while it stops; one that restarts shows as running,
                // unless its stop outlasts the limit.
                slot.publish(Some(managed));
            }
        }
        self.finish_stopping(managed).await
    }

    /// Waits at most [`ManagerConfig::stop_timeout`] for the pipeline's stop under way, if any.
    async fn finish_stopping(&self, managed: &mut Managed) -> Result<(), ManagerError> {
        let Some(stopping) = managed.stopping.as_mut() else { return Ok(()) };
        let limit = self.inner.stop_timeout;
        if tokio::time::timeout(limit, &mut stopping.task).await.is_err() {
            let name = managed.record.spec.name.clone();
            tracing::warn!(pipeline = %name, "the pipeline did not stop within {limit:?}; its stop goes on");
            return Err(ManagerError::StopTimeout { name, limit });
        }
        managed.stopping = None;
        Ok(())
    }

    /// The module `digest`, loaded once and kept.
    async fn module(&self, digest: &str) -> Result<Module, ManagerError> {
        let digest = canonical_digest(digest)?;
        if let Some(module) = self.inner.modules.lock().unwrap_or_else(|p| p.into_inner()).get(&digest) {
            return Ok(module.clone());
        }
        let bytes = match self.inner.registry.get(&digest).await? {
            Some((_, bytes)) => bytes,
            None => match &self.inner.control {
                // Stored on another node: read it from the cluster and keep it here.
                Some(control) => {
                    let stored = self.fetch_module(control, &digest).await?;
                    if let Some(module) = stored.module {
                        return Ok(module);
                    }
                    match self.inner.registry.get(&digest).await? {
                        Some((_, bytes)) => bytes,
                        None => return Err(RegistryError::NotFound { digest }.into()),
                    }
                }
                None => return Err(RegistryError::NotFound { digest }.into()),
            },
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
                let reason = e.to_string();
                // Once per reason: the retry loop tries again every RESTART_INTERVAL, and the
                // status keeps the reason meanwhile.
                if managed.failure.as_deref() != Some(reason.as_str()) {
                    tracing::error!(pipeline = %name, "pipeline not started: {e}; trying again every {RESTART_INTERVAL:?}");
                } else {
                    tracing::debug!(pipeline = %name, "pipeline still not started: {e}");
                }
                managed.failure = Some(reason);
            }
        }
    }

    /// Starts the pipeline, once a stop of it still under way has ended (the new consumer
    /// joins the group as the same member).
    async fn start_with(&self, managed: &mut Managed, module: Module) -> Result<(), ManagerError> {
        let spec = managed.record.spec.clone();
        if self.shutting_down() {
            return Err(ManagerError::Start { name: spec.name, reason: "the runtime is shutting down".into() });
        }
        self.finish_stopping(managed).await?;
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
            before_batch: None,
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

    /// Makes `record` the pipeline's stored record: saved in the store, or in a cluster
    /// committed to the registry log, where it must follow `generation` (the record's
    /// generation now, which becomes the new one's): [`ManagerError::Conflict`] when another
    /// node changed the pipeline first.
    async fn save(&self, generation: &mut u64, record: &PipelineRecord) -> Result<(), ManagerError> {
        match &self.inner.control {
            None => {
                let (store, record) = (self.inner.store.clone(), record.clone());
                blocking(move || store.save(&record)).await
            }
            Some(control) => self.commit(control, generation, &record.spec.name, Some(record)).await,
        }
    }

    /// Removes pipeline `name`'s stored record (see [`PipelineManager::save`]).
    async fn remove(&self, generation: &mut u64, name: &str) -> Result<(), ManagerError> {
        match &self.inner.control {
            None => {
                let (store, name) = (self.inner.store.clone(), name.to_string());
                blocking(move || store.remove(&name)).await
            }
            Some(control) => self.commit(control, generation, name, None).await,
        }
    }

    /// Commits pipeline `name`'s change to `record` to the registry log, as the generation
    /// after `generation` (0 for a pipeline this node does not have yet: then the generation
    /// after the log's, if the log has it deleted).
    async fn commit(
        &self,
        control: &Control,
        generation: &mut u64,
        name: &str,
        record: Option<&PipelineRecord>,
    ) -> Result<(), ManagerError> {
        let base = if *generation > 0 {
            *generation
        } else {
            match control.with_state(|s| s.pipeline(name).map(|e| (e.generation, e.record.is_some()))) {
                Some((current, true)) => {
                    return Err(CommitError::Conflict {
                        name: name.to_string(),
                        generation: current,
                        revision: control.with_state(|s| {
                            s.pipeline(name).and_then(|e| e.record.as_ref()).map_or(0, PipelineRecord::revision)
                        }),
                    }
                    .into());
                }
                Some((current, false)) => current,
                None => 0,
            }
        };
        control.commit_pipeline(name, base + 1, record).await?;
        *generation = base + 1;
        Ok(())
    }

    /// Tries once to start pipeline `name` (`slot`), which should run but does not, unless a
    /// change of it is under way (that change decides).
    async fn retry_start(&self, name: String, slot: Arc<PipelineSlot>) {
        let Ok(guard) = slot.change.clone().try_lock_owned() else { return };
        let mut change = Change { manager: self, name, slot, guard };
        let (_, Some(managed)) = change.parts() else { return };
        if managed.record.state == DesiredState::Running && managed.running.is_none() {
            self.start(managed).await;
            if managed.running.is_some() {
                tracing::info!(pipeline = %managed.record.spec.name, "pipeline started after an earlier failure");
            }
        }
    }
}

/// Cluster mode: how this node follows the registry log.
impl PipelineManager {
    /// In a cluster, brings the pipeline of `change` up to the registry log as this node has
    /// applied it, before a change proposed here is computed from it.
    async fn catch_up(&self, change: &mut Change<'_>) {
        let Some(control) = &self.inner.control else { return };
        let Some(entry) = control.with_state(|s| s.pipeline(&change.name).cloned()) else { return };
        let (slot, managed) = change.parts();
        let behind = match managed {
            Some(managed) => managed.generation < entry.generation,
            None => entry.record.is_some(),
        };
        if behind {
            self.realize(slot, managed, entry).await;
        }
    }

    /// Whether the registry log, as this node has read it, has pipeline `name`.
    fn in_log(&self, name: &str) -> bool {
        self.inner
            .control
            .as_ref()
            .is_some_and(|control| control.with_state(|s| s.pipeline(name).is_some_and(|e| e.record.is_some())))
    }

    /// In a cluster, applies here what the log says of pipeline `name` before a change made
    /// through this node reads it: a pipeline created or changed through another node is then
    /// found here too, as soon as this node has read the log that far.
    async fn sync(&self, name: &str) {
        if let Some(control) = &self.inner.control {
            control.read_to_end().await;
            let _change = self.change_or_create(name).await;
        }
    }

    /// Applies to pipeline `name` what the registry log says of it now, unless this node is
    /// there already (a change made through this node is applied by the call that made it).
    async fn reconcile(&self, name: String) {
        if self.shutting_down() {
            return;
        }
        // Taking the pipeline's lock catches it up; a slot made for a pipeline that the log
        // has deleted leaves the manager when the change ends.
        let _change = self.change_or_create(&name).await;
    }

    /// Makes pipeline `managed` (in `slot`) what `entry` of the registry log says: created,
    /// deleted, paused, resumed, reloaded (each partition switching between two batches, as
    /// for a reload made here) or restarted with new settings. A pipeline that cannot start is
    /// kept as failed and tried again, like a restored one.
    async fn realize(&self, slot: &PipelineSlot, managed: &mut Option<Managed>, entry: crate::cluster::PipelineEntry) {
        let Some(record) = entry.record else {
            if let Some(current) = managed.as_mut() {
                let name = current.record.spec.name.clone();
                if let Err(e) = self.stop_within_limit(slot, current, StopKind::Leave).await {
                    tracing::warn!(pipeline = %name, "deleted in the cluster, but: {e}");
                }
                tracing::info!(pipeline = %name, generation = entry.generation, "pipeline deleted in the cluster");
            }
            *managed = None;
            return;
        };
        let name = record.spec.name.clone();
        let Some(current) = managed.as_mut() else {
            let mut created = Managed::new(record);
            created.generation = entry.generation;
            if created.record.state == DesiredState::Running {
                self.start(&mut created).await;
            }
            tracing::info!(pipeline = %name, generation = entry.generation, revision = created.record.revision(), "pipeline created in the cluster");
            *managed = Some(created);
            return;
        };
        let old = current.record.clone();
        current.generation = entry.generation;
        if settings_cache_changed(&old.spec, &record.spec) {
            current.cache = None;
        }
        let settings_changed = PipelineSpec { module: record.spec.module.clone(), ..old.spec.clone() } != record.spec;
        let module_changed = old.spec.module != record.spec.module;
        let revision = record.revision();
        if record.state == DesiredState::Paused {
            current.record = record;
            current.failure = None;
            if let Err(e) = self.stop_within_limit(slot, current, StopKind::Leave).await {
                tracing::warn!(pipeline = %name, "paused in the cluster, but: {e}");
            } else if old.state != DesiredState::Paused {
                tracing::info!(pipeline = %name, "pipeline paused in the cluster");
            }
            return;
        }
        if settings_changed || current.running.is_none() {
            if current.running.is_some()
                && let Err(e) = self.stop_within_limit(slot, current, StopKind::Restart).await
            {
                // The retry loop starts it with the new record once the stop ends.
                current.record = record;
                tracing::warn!(pipeline = %name, "updated in the cluster, but: {e}");
                return;
            }
            current.record = record;
            self.start(current).await;
            if current.running.is_some() {
                tracing::info!(pipeline = %name, revision, "pipeline (re)started for a change in the cluster");
            }
            return;
        }
        if module_changed {
            match self.module(record.spec.module.as_str()).await {
                Ok(module) => {
                    if let Some(pipeline) = &current.running {
                        pipeline.reload(module, revision);
                    }
                    tracing::info!(pipeline = %name, revision, module = %record.spec.module, "pipeline reloaded for a change in the cluster");
                }
                Err(e) => {
                    // Never runs a revision the cluster replaced: stops, and the retry loop
                    // starts it with the new revision once its module can be read.
                    tracing::error!(pipeline = %name, revision, "cannot reload to the cluster's module: {e}; stopping it here until it can");
                    current.record = record;
                    if let Err(stop) = self.stop_within_limit(slot, current, StopKind::Leave).await {
                        tracing::warn!(pipeline = %name, "{stop}");
                    }
                    current.failure = Some(format!("cannot load revision {revision}: {e}"));
                    return;
                }
            }
        }
        current.record = record;
    }

    /// Keeps the module `stored` compiled, if this call compiled it, so its next use is instant.
    fn keep_compiled(&self, stored: &Stored) {
        if let Some(module) = &stored.module {
            self.inner
                .modules
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(stored.info.digest.clone(), module.clone());
        }
    }

    /// Reads module `digest` from the cluster's modules topic and stores it in this node's
    /// registry (checked and compiled).
    async fn fetch_module(&self, control: &Arc<Control>, digest: &str) -> Result<Stored, ManagerError> {
        let typed = module_digest(digest)?;
        let _fetching = self.inner.fetching.lock().await;
        if let Some((_, bytes)) = self.inner.registry.get(digest).await? {
            // Read meanwhile by another task.
            return Ok(self.inner.registry.put(bytes.into()).await?);
        }
        let control = control.clone();
        let bytes = tokio::task::spawn_blocking(move || control.fetch_module(&typed))
            .await
            .map_err(|e| RegistryError::Task { digest: digest.to_string(), reason: e.to_string() })?
            .map_err(|e| ManagerError::Kafka(format!("module {digest}: cannot read it from the cluster: {e:#}")))?;
        let stored = self.inner.registry.put(bytes.into()).await?;
        self.keep_compiled(&stored);
        tracing::info!(module = %stored.info.digest, "module read from the cluster");
        Ok(stored)
    }

    /// Follows module `hex`'s change in the registry log: a module stored on another node is
    /// read and kept here too, a deleted one removed.
    async fn replicate_module(&self, hex: String) {
        let Some(control) = &self.inner.control else { return };
        let digest = format!("{}{hex}", sluice_contract::DIGEST_PREFIX);
        let stored = control.with_state(|s| s.module(&hex).map(|m| m.info.is_some()));
        match stored {
            Some(true) => {
                if matches!(self.inner.registry.info(&digest).await, Ok(Some(_))) {
                    return;
                }
                if let Err(e) = self.fetch_module(control, &digest).await {
                    tracing::error!(module = %digest, "cannot read a module stored in the cluster: {e}");
                }
            }
            Some(false) => {
                self.inner.modules.lock().unwrap_or_else(|p| p.into_inner()).remove(&digest);
                match self.inner.registry.delete(&digest).await {
                    Ok(()) | Err(RegistryError::NotFound { .. }) => {}
                    Err(e) => tracing::warn!(module = %digest, "cannot delete a module deleted in the cluster: {e}"),
                }
            }
            None => {}
        }
    }
}

/// Applies what the registry log's follower reads, as long as the manager lives: each
/// pipeline change by a task of its own (under that pipeline's lock), each module change too.
async fn follow_cluster(inner: std::sync::Weak<Inner>, mut events: tokio::sync::mpsc::UnboundedReceiver<Event>) {
    while let Some(event) = events.recv().await {
        let Some(inner) = inner.upgrade() else { return };
        let manager = PipelineManager { inner };
        match event {
            Event::Pipeline(name) => {
                tokio::spawn(async move { manager.reconcile(name).await });
            }
            Event::Module(hex) => {
                tokio::spawn(async move { manager.replicate_module(hex).await });
            }
            Event::Refused(name) => {
                if let Some(control) = manager.inner.control.clone() {
                    tokio::spawn(async move { control.restate_if_left(&name).await });
                }
            }
        }
    }
}

/// The folder the pipeline store is renamed to once imported into a cluster's registry.
pub const IMPORTED_PIPELINES_DIR: &str = "pipelines.imported";

/// Imports the records of a runtime's own pipeline store into the cluster's registry log, once:
/// each pipeline the log does not have yet, with its modules; the store's folder is then
/// renamed [`IMPORTED_PIPELINES_DIR`], so a restart does not import it again.
async fn import_store(control: &Control, store: &PipelineStore, registry: &ModuleRegistry) -> anyhow::Result<()> {
    let records = store.load_all()?;
    if records.is_empty() {
        return Ok(());
    }
    for record in records {
        let name = record.spec.name.clone();
        if control.with_state(|s| s.pipeline(&name).is_some()) {
            tracing::info!(pipeline = %name, "not imported from the data directory: the cluster has it already");
            continue;
        }
        let digests: std::collections::BTreeSet<String> =
            record.revisions.iter().map(|r| r.module.to_string()).collect();
        for digest in digests {
            match registry.get(&digest).await? {
                Some((info, bytes)) => control.publish_module(&info, &bytes).await?,
                None => {
                    tracing::warn!(pipeline = %name, module = %digest, "a kept module is missing from the data directory; not imported")
                }
            }
        }
        match control.commit_pipeline(&name, 1, Some(&record)).await {
            Ok(()) => tracing::info!(pipeline = %name, "pipeline imported from the data directory into the cluster"),
            Err(CommitError::Conflict { .. }) => {
                tracing::info!(pipeline = %name, "not imported: another node imported or created it first")
            }
            Err(e) => return Err(e.into()),
        }
    }
    let mut imported = store.dir().with_file_name(IMPORTED_PIPELINES_DIR);
    if imported.exists() {
        imported = imported.with_extension(format!("imported.{}", crate::registry::now()));
    }
    std::fs::rename(store.dir(), &imported).with_context(|| {
        format!("cannot rename {} to {} after importing it", store.dir().display(), imported.display())
    })?;
    std::fs::create_dir_all(store.dir())?;
    Ok(())
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
/// not, all at once, each under its own lock: a retry waiting on the broker holds back
/// neither reads nor changes of other pipelines. Ends with the manager.
async fn restart_failed(inner: std::sync::Weak<Inner>) {
    loop {
        tokio::time::sleep(RESTART_INTERVAL).await;
        let Some(inner) = inner.upgrade() else { return };
        let manager = PipelineManager { inner };
        if manager.shutting_down() {
            return;
        }
        let failed: Vec<(String, Arc<PipelineSlot>)> = {
            let pipelines = manager.inner.pipelines.read().unwrap_or_else(|p| p.into_inner());
            pipelines
                .iter()
                .filter(|(_, slot)| slot.view().is_some_and(|v| v.should_start()))
                .map(|(name, slot)| (name.clone(), slot.clone()))
                .collect()
        };
        futures_util::future::join_all(failed.into_iter().map(|(name, slot)| manager.retry_start(name, slot))).await;
    }
}

/// Cluster membership: this node's heartbeats and the cluster's nodes (see
/// [`crate::cluster::status`]).
impl PipelineManager {
    /// Starts publishing this node's heartbeats to the cluster's status topic and following
    /// everyone's, with `control`'s Kafka settings, topics and appender; `admin_url` is this
    /// node's admin API as others may reach it. Once only: a second call is refused.
    pub async fn start_membership(
        &self,
        control: &crate::cluster::Control,
        admin_url: Option<String>,
    ) -> anyhow::Result<()> {
        use crate::cluster::status::{Membership, Snapshot};
        let inner = Arc::downgrade(&self.inner);
        let snapshot: Snapshot = Arc::new(move || {
            let inner = inner.clone();
            Box::pin(async move {
                match inner.upgrade() {
                    Some(inner) => PipelineManager { inner }.node_pipelines().await,
                    None => Vec::new(),
                }
            })
        });
        let (kafka, config, node, appender) =
            (control.kafka(), control.config(), control.node(), control.appender().clone());
        let counters = control.counters().clone();
        let membership = Membership::start(kafka, config, node, appender, snapshot, admin_url, counters).await?;
        self.inner.membership.set(membership).map_err(|_| anyhow::anyhow!("the membership is started already"))
    }

    /// Publishes this node's last heartbeat, saying it left, and stops publishing: on a clean
    /// shutdown, after the pipelines stopped. Nothing outside cluster mode.
    pub async fn leave_membership(&self) {
        if let Some(membership) = self.inner.membership.get() {
            membership.leave().await;
        }
    }

    /// The cluster's nodes, sorted by id; `None` outside cluster mode.
    pub fn cluster_nodes(&self) -> Option<Vec<crate::cluster::status::NodeStatus>> {
        self.inner.membership.get().map(|m| m.nodes())
    }

    /// What this node's control plane counted; `None` outside cluster mode.
    pub fn control_stats(&self) -> Option<crate::cluster::ControlStats> {
        self.inner.control.as_ref().map(|control| control.counters().stats())
    }

    /// This node's pipelines as its heartbeat shows them.
    pub async fn node_pipelines(&self) -> Vec<crate::cluster::status::NodePipeline> {
        self.statuses().await.iter().map(Into::into).collect()
    }

    /// Each node's share of pipeline `name`; empty outside cluster mode.
    fn node_shares(&self, name: &str) -> Vec<crate::cluster::status::NodeShare> {
        self.cluster_nodes().map(|nodes| crate::cluster::status::shares(&nodes, name)).unwrap_or_default()
    }
}
