//! Cluster mode: the registry kept in Kafka, so that every node of a cluster runs the same
//! pipelines with the same modules, with Kafka as the only coordinator.
//!
//! - [`state`]: the registry rebuilt from the registry topic, a pure state machine;
//! - this file: [`Control`], a node's link to the control topics. It reads the registry topic
//!   from the start at boot and then follows it on a thread of its own, applying every record
//!   to its [`RegistryState`] and telling the manager which pipelines and modules changed
//!   ([`Event`]); it appends the changes proposed on this node and waits until they are
//!   applied here (read-your-writes), answering whether the log accepted them; it stores
//!   module binaries in the modules topic in chunks and reads them back;
//! - [`status`]: the nodes' heartbeats in the status topic, and the cluster's membership.
//!
//! The manager ([`crate::manager`]) makes the running pipelines match the log: a change made
//! through this node's API is applied here by the call that made it, once the log accepted
//! it; a change read from the log that this node did not make is applied by the manager's
//! reconciler.

pub mod state;
pub mod status;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::registry::ModuleInfo;
use crate::registry::pipelines::PipelineRecord;
use sluice_engine::ModuleDigest;
use sluice_kafka::KafkaConfig;
use sluice_kafka::log::{Cleanup, LogAppender, LogEnd, LogReader, ensure_log_topic};

pub use state::{ModuleChange, Outcome, PipelineChange, PipelineEntry, RegistryState};

/// The registry topic's name by default.
pub const DEFAULT_REGISTRY_TOPIC: &str = "_sluice_registry";
/// The modules topic's name by default.
pub const DEFAULT_MODULES_TOPIC: &str = "_sluice_modules";
/// The status topic's name by default.
pub const DEFAULT_STATUS_TOPIC: &str = "_sluice_status";
/// How often a node publishes its heartbeat, by default.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// How long after its last heartbeat a node is shown as gone, by default.
pub const DEFAULT_NODE_GONE_AFTER: Duration = Duration::from_secs(10);
/// The largest chunk of a module binary in the modules topic: well below the usual broker
/// limit on a record (1 MiB).
pub const MODULE_CHUNK_BYTES: usize = 512 * 1024;
/// The longest a change proposed on this node waits to be read back from the registry topic.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the follower waits for a record before looking again.
const FOLLOW_POLL: Duration = Duration::from_millis(100);
/// The longest a change made through this node waits to learn where the registry topic ends
/// before it reads this node's state (see [`Control::read_to_end`]); past it the change goes on
/// from what this node has read.
pub const READ_TO_END_TIMEOUT: Duration = Duration::from_secs(2);
/// How long after a refused change every node restates the accepted record, unless it was
/// restated by then (by the node refused, at once).
pub const RESTATE_AFTER: Duration = Duration::from_secs(5);
/// How many recent outcomes are kept for the calls waiting for them.
const KEPT_OUTCOMES: usize = 4096;

/// The control topics of a cluster, and its timings. Nodes of one cluster share them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// The compacted topic holding every change of the registry.
    pub registry_topic: String,
    /// The compacted topic holding module binaries, by digest, in chunks.
    pub modules_topic: String,
    /// The compacted topic holding each node's last heartbeat.
    pub status_topic: String,
    /// How often a node publishes its heartbeat, in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// How long after its last heartbeat a node is shown as gone, in milliseconds.
    pub node_gone_after_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            registry_topic: DEFAULT_REGISTRY_TOPIC.into(),
            modules_topic: DEFAULT_MODULES_TOPIC.into(),
            status_topic: DEFAULT_STATUS_TOPIC.into(),
            heartbeat_interval_ms: DEFAULT_HEARTBEAT_INTERVAL.as_millis() as u64,
            node_gone_after_ms: DEFAULT_NODE_GONE_AFTER.as_millis() as u64,
        }
    }
}

impl ClusterConfig {
    /// Checks the topic names and timings.
    pub fn validate(&self) -> Result<(), String> {
        let topics = [&self.registry_topic, &self.modules_topic, &self.status_topic];
        if let Some(topic) = topics.iter().find(|t| t.is_empty() || t.len() > 249) {
            return Err(format!("cluster topic {topic:?} must be 1 to 249 characters"));
        }
        if self.registry_topic == self.modules_topic
            || self.registry_topic == self.status_topic
            || self.modules_topic == self.status_topic
        {
            return Err("the cluster's registry, modules and status topics must be three different topics".into());
        }
        if self.heartbeat_interval_ms == 0 || self.node_gone_after_ms < 2 * self.heartbeat_interval_ms {
            return Err(format!(
                "cluster.node_gone_after_ms ({}) must be at least twice cluster.heartbeat_interval_ms ({}), which must not be 0",
                self.node_gone_after_ms, self.heartbeat_interval_ms
            ));
        }
        Ok(())
    }

    /// How often a node publishes its heartbeat.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }

    /// How long after its last heartbeat a node is gone.
    pub fn node_gone_after(&self) -> Duration {
        Duration::from_millis(self.node_gone_after_ms)
    }
}

/// What the follower read that the manager must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Pipeline `name` changed in the log.
    Pipeline(String),
    /// Module `hex` was stored or deleted.
    Module(String),
    /// A change of pipeline `name` was refused: its accepted record must be restated (see
    /// [`state`]) if the node refused does not do it.
    Refused(String),
}

/// Why a change proposed on this node was not made.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Another node changed the pipeline first.
    #[error(
        "pipeline {name} was changed on another node at the same time: it is now at revision {revision} \
         (generation {generation}); this change was not applied, try it again on the current state"
    )]
    Conflict {
        /// The pipeline.
        name: String,
        /// Its current generation.
        generation: u64,
        /// Its current revision.
        revision: u64,
    },
    /// The change could not be appended or read back.
    #[error("the registry topic {topic}: {reason}")]
    Log {
        /// The registry topic.
        topic: String,
        /// What went wrong.
        reason: String,
    },
}

/// A node's link to its cluster's control topics. Cheap to share (`Arc`).
pub struct Control {
    config: ClusterConfig,
    kafka: KafkaConfig,
    node: String,
    appender: LogAppender,
    /// Asks where the registry topic ends.
    end: Arc<LogEnd>,
    state: Mutex<RegistryState>,
    /// Outcomes of recent records, by offset, for the calls waiting for them.
    outcomes: Mutex<BTreeMap<i64, Outcome>>,
    /// The offset of the next record to apply, as the follower advances.
    applied: watch::Sender<i64>,
    /// Set to end the follower.
    stop: AtomicBool,
    /// The follower's thread, joined when the node leaves.
    follower: Mutex<Option<std::thread::JoinHandle<()>>>,
    counters: Arc<Counters>,
}

/// What a node's control plane counted since it started, shown in `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Registry records skipped because they cannot be read.
    skipped_records: AtomicU64,
    /// Changes the log refused because another change of the pipeline came first (every node
    /// counts each refusal it reads).
    refused_changes: AtomicU64,
    /// Times this node began failing to read a control topic.
    read_outages: AtomicU64,
    /// Heartbeats skipped because they cannot be read.
    skipped_heartbeats: AtomicU64,
    /// Times this node began failing to publish its heartbeat.
    heartbeat_outages: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ControlStats {
    /// Registry records skipped because they cannot be read.
    pub skipped_records: u64,
    /// Changes the log refused because another change of the pipeline came first.
    pub refused_changes: u64,
    /// Times this node began failing to read a control topic.
    pub read_outages: u64,
    /// Heartbeats skipped because they cannot be read.
    pub skipped_heartbeats: u64,
    /// Times this node began failing to publish its heartbeat.
    pub heartbeat_outages: u64,
}

impl Counters {
    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now.
    pub fn stats(&self) -> ControlStats {
        ControlStats {
            skipped_records: self.skipped_records.load(Ordering::Relaxed),
            refused_changes: self.refused_changes.load(Ordering::Relaxed),
            read_outages: self.read_outages.load(Ordering::Relaxed),
            skipped_heartbeats: self.skipped_heartbeats.load(Ordering::Relaxed),
            heartbeat_outages: self.heartbeat_outages.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn skipped_heartbeat(&self) {
        Counters::count(&self.skipped_heartbeats);
    }

    pub(crate) fn heartbeat_outage(&self) {
        Counters::count(&self.heartbeat_outages);
    }

    pub(crate) fn read_outage(&self) {
        Counters::count(&self.read_outages);
    }
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control").field("node", &self.node).field("config", &self.config).finish()
    }
}

impl Control {
    /// Joins the cluster as node `node`: makes sure the control topics exist, reads the
    /// registry topic to its end (so the caller starts from the cluster's state), then follows
    /// it on a thread of its own. The events of what it reads after this call come on the
    /// returned channel.
    pub async fn join(
        kafka: &KafkaConfig,
        config: ClusterConfig,
        node: &str,
    ) -> anyhow::Result<(Arc<Control>, mpsc::UnboundedReceiver<Event>)> {
        config.validate().map_err(anyhow::Error::msg)?;
        for topic in [&config.registry_topic, &config.modules_topic, &config.status_topic] {
            ensure_log_topic(kafka, topic, Cleanup::Compact).await?;
        }
        let appender = LogAppender::new(kafka, &format!("sluice-{node}-control"))?;
        let end = Arc::new(LogEnd::new(kafka, &config.registry_topic)?);
        let control = Arc::new(Control {
            config: config.clone(),
            kafka: kafka.clone(),
            node: node.to_string(),
            appender,
            end,
            state: Mutex::default(),
            outcomes: Mutex::default(),
            applied: watch::Sender::new(0),
            stop: AtomicBool::new(false),
            follower: Mutex::default(),
            counters: Arc::default(),
        });
        let (events, receiver) = mpsc::unbounded_channel();
        let (kafka, topic) = (kafka.clone(), config.registry_topic.clone());
        let reader = tokio::task::spawn_blocking(move || -> anyhow::Result<LogReader> {
            let reader = LogReader::open(&kafka, &topic, 0)?;
            Ok(reader)
        })
        .await
        .context("the registry reader's task failed")??;
        let catch_up = {
            let control = control.clone();
            tokio::task::spawn_blocking(move || control.catch_up(&reader).map(|read| (reader, read)))
        };
        let (reader, read) = catch_up.await.context("the registry reader's task failed")??;
        tracing::info!(
            node,
            topic = %config.registry_topic,
            records = read,
            pipelines = control.with_state(|s| s.pipelines().count()),
            "read the cluster's registry"
        );
        let follower = Arc::downgrade(&control);
        let thread = std::thread::Builder::new()
            .name("sluice-registry".into())
            .spawn(move || follow(follower, reader, events))
            .context("cannot start the registry follower")?;
        *control.follower.lock().unwrap_or_else(|p| p.into_inner()) = Some(thread);
        Ok((control, receiver))
    }

    /// Reads the registry topic up to its end as it is now; answers how many records it read.
    fn catch_up(&self, reader: &LogReader) -> anyhow::Result<usize> {
        let end = reader.end().with_context(|| format!("cannot read the end of {}", reader.topic()))?;
        let mut read = 0;
        let deadline = std::time::Instant::now() + COMMIT_TIMEOUT;
        while self.with_state(RegistryState::next_offset) < end {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "the registry topic {} was not read to its end (offset {end}) within {COMMIT_TIMEOUT:?}",
                reader.topic()
            );
            if let Some(record) = reader.poll(FOLLOW_POLL).context("cannot read the registry topic")? {
                self.apply(&record);
                read += 1;
            }
        }
        Ok(read)
    }

    /// Applies one record of the registry topic; answers what it did.
    fn apply(&self, record: &sluice_kafka::log::LogRecord) -> Outcome {
        let outcome = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.apply(record.offset, &record.key, record.value.as_deref())
        };
        match &outcome {
            Outcome::Invalid(reason) => {
                Counters::count(&self.counters.skipped_records);
                tracing::error!(topic = %self.config.registry_topic, "skipping a registry record: {reason}")
            }
            Outcome::Rejected { name, generation, .. } => {
                Counters::count(&self.counters.refused_changes);
                tracing::info!(
                    pipeline = %name,
                    offset = record.offset,
                    "a change made from an older generation was rejected (the pipeline is at generation {generation})"
                )
            }
            _ => {}
        }
        let mut outcomes = self.outcomes.lock().unwrap_or_else(|p| p.into_inner());
        outcomes.insert(record.offset, outcome.clone());
        while outcomes.len() > KEPT_OUTCOMES {
            outcomes.pop_first();
        }
        drop(outcomes);
        self.applied.send_replace(record.offset + 1);
        outcome
    }

    /// Reads the registry as this node has applied it.
    pub fn with_state<T>(&self, read: impl FnOnce(&RegistryState) -> T) -> T {
        read(&self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// What this node's control plane counts, shared with its membership (see
    /// [`status::Membership::start`]).
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// The cluster's settings.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The cluster's Kafka settings.
    pub fn kafka(&self) -> &KafkaConfig {
        &self.kafka
    }

    /// The appender of this node's control records.
    pub fn appender(&self) -> &LogAppender {
        &self.appender
    }

    /// Proposes that pipeline `name` be `record` (`None`: deleted) at `generation`, and waits
    /// until this node has applied it: `Ok` once the log accepted it,
    /// [`CommitError::Conflict`] when another node's change came first.
    pub async fn commit_pipeline(
        &self,
        name: &str,
        generation: u64,
        record: Option<&PipelineRecord>,
    ) -> Result<(), CommitError> {
        let change = PipelineChange { generation, record: record.cloned(), node: self.node.clone() };
        let value = serde_json::to_vec(&change).expect("a pipeline change serialises");
        let offset = self.append(&state::pipeline_key(name), &value).await?;
        match self.outcome(offset).await? {
            Outcome::Pipeline { .. } | Outcome::Restated => Ok(()),
            Outcome::Rejected { generation, revision, .. } => {
                self.restate(name).await;
                Err(CommitError::Conflict { name: name.to_string(), generation, revision })
            }
            Outcome::Invalid(reason) | Outcome::Module { hex: reason } => Err(self.log_error(reason)),
        }
    }

    /// Waits until this node has read the registry topic to where it ends now, so that a
    /// change made through this node starts from every change committed before it, through
    /// whichever node. Gives up (with a warning) after [`READ_TO_END_TIMEOUT`] and lets the
    /// change start from what this node has read: the log's generation check still refuses a
    /// change made from an older state.
    pub async fn read_to_end(&self) {
        let end = self.end.clone();
        let asked = tokio::task::spawn_blocking(move || end.end(READ_TO_END_TIMEOUT)).await;
        let end = match asked {
            Ok(Ok(end)) => end,
            Ok(Err(e)) => {
                tracing::warn!(topic = %self.config.registry_topic, "cannot learn where the registry topic ends: {e}; going on from what this node has read");
                return;
            }
            Err(_) => return,
        };
        let mut applied = self.applied.subscribe();
        if tokio::time::timeout(READ_TO_END_TIMEOUT, applied.wait_for(|next| *next >= end)).await.is_err() {
            tracing::warn!(
                topic = %self.config.registry_topic,
                "this node has not read the registry topic to its end (offset {end}) within {READ_TO_END_TIMEOUT:?}; going on from what it has read"
            );
        }
    }

    /// Appends pipeline `name`'s accepted record again, so that the last record of its key is
    /// the accepted one (see [`state`]).
    pub async fn restate(&self, name: &str) {
        let Some(entry) = self.with_state(|s| s.pipeline(name).cloned()) else { return };
        let change = PipelineChange { generation: entry.generation, record: entry.record, node: self.node.clone() };
        let value = serde_json::to_vec(&change).expect("a pipeline change serialises");
        if let Err(e) = self.append(&state::pipeline_key(name), &value).await {
            tracing::warn!(pipeline = %name, "cannot restate the accepted record after a rejected change: {e}");
        }
    }

    /// Restates pipeline `name` if its last record is still a refused change after
    /// [`RESTATE_AFTER`]: the node refused restates at once, this covers a node that crashed
    /// before it could. Every node does it, which is harmless (a restatement changes nothing).
    pub async fn restate_if_left(&self, name: &str) {
        tokio::time::sleep(RESTATE_AFTER).await;
        if self.with_state(|s| s.unrestated().any(|n| n == name)) {
            tracing::info!(pipeline = %name, "restating the accepted record after a refused change left unrestated");
            self.restate(name).await;
        }
    }

    /// Restates every pipeline whose last record is a rejected change (a node that crashed
    /// before restating leaves such a record).
    pub async fn restate_leftovers(&self) {
        let names: Vec<String> = self.with_state(|s| s.unrestated().cloned().collect());
        for name in names {
            self.restate(&name).await;
        }
    }

    /// Stores `bytes` (module `info`) in the modules topic, in chunks, then records the module
    /// in the registry topic. A module the registry already records is left as it is.
    pub async fn publish_module(&self, info: &ModuleInfo, bytes: &[u8]) -> Result<(), CommitError> {
        let digest: ModuleDigest = info.digest.parse().map_err(|e| self.log_error(format!("{e}")))?;
        let hex = digest.hex().to_string();
        if self.with_state(|s| s.module(&hex).is_some_and(|m| m.info.is_some())) {
            return Ok(());
        }
        let chunks = bytes.chunks(MODULE_CHUNK_BYTES).count().max(1) as u32;
        for (index, chunk) in bytes.chunks(MODULE_CHUNK_BYTES).enumerate() {
            self.appender
                .append(&self.config.modules_topic, chunk_key(&hex, index as u32).as_bytes(), Some(chunk))
                .await
                .map_err(|e| CommitError::Log {
                    topic: self.config.modules_topic.clone(),
                    reason: format!("cannot store chunk {index} of module {}: {e}", info.digest),
                })?;
        }
        let change = ModuleChange { info: Some(info.clone()), chunks, node: self.node.clone() };
        let offset = self.append(&state::module_key(&hex), &serde_json::to_vec(&change).expect("serialises")).await?;
        self.outcome(offset).await?;
        tracing::info!(module = %info.digest, chunks, "module stored in the cluster");
        Ok(())
    }

    /// Records module `hex` as deleted, and removes its chunks from the modules topic.
    pub async fn unpublish_module(&self, hex: &str) -> Result<(), CommitError> {
        let chunks = self.with_state(|s| s.module(hex).map_or(0, |m| m.chunks));
        let change = ModuleChange { info: None, chunks, node: self.node.clone() };
        let offset = self.append(&state::module_key(hex), &serde_json::to_vec(&change).expect("serialises")).await?;
        self.outcome(offset).await?;
        for index in 0..chunks {
            if let Err(e) =
                self.appender.append(&self.config.modules_topic, chunk_key(hex, index).as_bytes(), None).await
            {
                tracing::warn!(module = %hex, "cannot remove chunk {index} from the modules topic: {e}");
            }
        }
        Ok(())
    }

    /// The binary of module `digest`, read back from the modules topic and checked against its
    /// digest. Blocking: reads the modules topic from its start.
    pub fn fetch_module(&self, digest: &ModuleDigest) -> anyhow::Result<Vec<u8>> {
        let hex = digest.hex();
        let Some(chunks) = self.with_state(|s| s.module(hex).filter(|m| m.info.is_some()).map(|m| m.chunks)) else {
            anyhow::bail!("module {digest} is not in the cluster's registry ({})", self.config.registry_topic);
        };
        let topic = &self.config.modules_topic;
        let reader = LogReader::open(&self.kafka, topic, 0)?;
        let end = reader.end().with_context(|| format!("cannot read the end of {topic}"))?;
        let prefix = format!("{hex}/");
        let mut parts: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        let deadline = std::time::Instant::now() + COMMIT_TIMEOUT;
        let mut next = 0;
        while next < end {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "module {digest}: the modules topic {topic} was not read to its end within {COMMIT_TIMEOUT:?}"
            );
            let Some(record) = reader.poll(FOLLOW_POLL)? else { continue };
            next = record.offset + 1;
            let Some(index) = std::str::from_utf8(&record.key)
                .ok()
                .and_then(|k| k.strip_prefix(&prefix))
                .and_then(|i| i.parse::<u32>().ok())
            else {
                continue;
            };
            match record.value {
                Some(value) => parts.insert(index, value),
                None => parts.remove(&index),
            };
        }
        let missing: Vec<u32> = (0..chunks).filter(|i| !parts.contains_key(i)).collect();
        anyhow::ensure!(
            missing.is_empty(),
            "module {digest}: chunks {missing:?} of {chunks} are missing from the modules topic {topic}"
        );
        let bytes: Vec<u8> = parts.into_iter().filter(|(i, _)| *i < chunks).flat_map(|(_, part)| part).collect();
        anyhow::ensure!(
            ModuleDigest::of(&bytes) == *digest,
            "module {digest}: the {} bytes read back from the modules topic {topic} do not match the digest",
            bytes.len()
        );
        Ok(bytes)
    }

    /// Appends a record to the registry topic; answers its offset.
    async fn append(&self, key: &str, value: &[u8]) -> Result<i64, CommitError> {
        self.appender
            .append(&self.config.registry_topic, key.as_bytes(), Some(value))
            .await
            .map_err(|e| self.log_error(format!("cannot append {key}: {e}")))
    }

    /// Waits until this node has applied the record at `offset`, and answers what it did.
    async fn outcome(&self, offset: i64) -> Result<Outcome, CommitError> {
        let mut applied = self.applied.subscribe();
        let read = tokio::time::timeout(COMMIT_TIMEOUT, applied.wait_for(|next| *next > offset)).await;
        match read {
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => {
                return Err(self.log_error(format!(
                    "the record at offset {offset} was appended but not read back within {COMMIT_TIMEOUT:?}"
                )));
            }
        }
        let outcomes = self.outcomes.lock().unwrap_or_else(|p| p.into_inner());
        outcomes.get(&offset).cloned().ok_or_else(|| self.log_error(format!("the outcome of offset {offset} is gone")))
    }

    fn log_error(&self, reason: String) -> CommitError {
        CommitError::Log { topic: self.config.registry_topic.clone(), reason }
    }

    /// Ends the follower, and waits for its thread (its next poll, at most [`FOLLOW_POLL`]),
    /// so that nothing reads the cluster once the node has left.
    pub async fn leave(&self) {
        self.stop.store(true, Ordering::SeqCst);
        // Appends are awaited by their callers: nothing is normally left to send.
        self.appender.flush(Duration::from_secs(1));
        let thread = self.follower.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// The key of chunk `index` of module `hex` in the modules topic.
fn chunk_key(hex: &str, index: u32) -> String {
    format!("{hex}/{index}")
}

/// Follows the registry topic until `control` is dropped or left, applying every record and
/// sending the events of those that changed something.
fn follow(control: std::sync::Weak<Control>, reader: LogReader, events: mpsc::UnboundedSender<Event>) {
    let mut failing = false;
    loop {
        let Some(control) = control.upgrade() else { return };
        if control.stop.load(Ordering::SeqCst) {
            return;
        }
        match reader.poll(FOLLOW_POLL) {
            Ok(Some(record)) => {
                if failing {
                    tracing::info!(topic = %reader.topic(), "reading the registry topic again");
                    failing = false;
                }
                let event = match control.apply(&record) {
                    Outcome::Pipeline { name } => Some(Event::Pipeline(name)),
                    Outcome::Module { hex } => Some(Event::Module(hex)),
                    Outcome::Rejected { name, .. } => Some(Event::Refused(name)),
                    _ => None,
                };
                if let Some(event) = event
                    && events.send(event).is_err()
                {
                    return;
                }
            }
            Ok(None) => {}
            Err(e) => {
                if !failing {
                    control.counters.read_outage();
                    tracing::warn!(topic = %reader.topic(), "cannot read the registry topic: {e}; retrying");
                    failing = true;
                }
                std::thread::sleep(FOLLOW_POLL);
            }
        }
    }
}
