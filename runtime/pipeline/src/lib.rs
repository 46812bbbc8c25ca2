//! Pipelines: a Kafka source, a function, and a Kafka sink, with Sluice's delivery guarantee.
//!
//! A [`Pipeline`] owns one consumer in its consumer group and one worker per assigned
//! partition. Workers run in parallel; each processes its partition in offset order and
//! stores an offset for commit only after every output and dead letter it caused is
//! acknowledged (at-least-once). On a rebalance, workers of revoked partitions stop and their
//! unfinished batch is left uncommitted; new workers start at the committed offset.
//!
//! A pipeline's module can be replaced while it runs ([`Pipeline::reload`]): every worker
//! switches to the new module between two batches, so each record is processed by exactly
//! one version and each partition switches at one offset.

pub mod cluster;
pub mod function_log;
pub mod manager;
pub mod registry;
pub mod spec;

mod failure;
mod transaction;
mod worker;

/// What kind of failure a record had, as dead-letter headers name it.
pub use failure::{FailureKind, FaultCounts};

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Deserialize;
use serde::Serialize;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use function_log::{FunctionLog, PartitionLogSink};
use sluice_cache::{Cache, CacheStatsSnapshot, LatencyHistogram, LatencySnapshot};
use sluice_engine::{Engine, FunctionContext, FunctionInstance, Module};
use sluice_kafka::sink::KafkaSink;
use sluice_kafka::source::{self, AssignmentEvent, Source};
use sluice_kafka::{BrokerWatch, KafkaConfig};
use spec::{FailurePolicy, PipelineSpec};
use worker::{Crash, PartitionWorker};

/// How long a stopping worker waits for the acknowledgements of the batch it is delivering
/// before it gives the batch up, uncommitted (it is processed again by the next owner).
pub const STOP_ACK_GRACE: Duration = Duration::from_secs(5);
/// Consume errors of a pipeline are logged at WARN at most once per this interval; each is
/// counted (`consume_errors`).
pub const CONSUME_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// How long a stopping pipeline waits for its final commit of what was acknowledged.
pub const STOP_COMMIT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a pipeline that stops and leaves its group serves the consumer so the group hears
/// it leave.
const STOP_LEAVE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a stopping pipeline waits for the producer to send what it queued.
pub const STOP_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a stopped pipeline waits for its Kafka clients to close. Closing a consumer waits
/// on its group's coordinator, as long as librdkafka decides (10 s and more) when the broker is
/// gone; past this bound the close goes on in the background.
pub const STOP_CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// A running pipeline that has owned no partition for this long, while its consumer group has
/// records waiting and commits nothing, is stalled.
pub const STALL_AFTER: Duration = Duration::from_secs(30);
/// How often a pipeline checks whether it is stalled.
const STALL_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// How long a new assignment of a partition waits for the worker that had it before to stop.
const PREVIOUS_WORKER_WAIT: Duration = Duration::from_secs(60);
/// A partition whose worker crashes this many times in a row at the same offset is held there,
/// `blocked`, until an operator resumes it (`sluice resume`) or reloads the module.
pub const CRASHES_BEFORE_HOLD: u32 = 3;
/// How long a partition waits before its worker is started again after a crash (a panic, which
/// is a bug in the runtime); doubled for each crash in a row, up to [`CRASH_RESTART_MAX_DELAY`].
pub const CRASH_RESTART_DELAY: Duration = Duration::from_secs(1);
/// The longest wait before a crashed partition worker is started again.
pub const CRASH_RESTART_MAX_DELAY: Duration = Duration::from_secs(60);

/// A running pipeline.
pub struct Pipeline {
    shared: Arc<Shared>,
    shutdown: watch::Sender<Stop>,
    task: JoinHandle<()>,
}

/// Whether, and how, a pipeline is told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    No,
    /// Stop and leave the consumer group, so other members take the partitions over now.
    Leave,
    /// Stop for a restart of this runtime: a static member stays in its group, so the
    /// restarted runtime takes its partitions back as the same member, without a rebalance.
    Restart,
}

/// What a pipeline's workers share.
pub(crate) struct Shared {
    pub(crate) spec: PipelineSpec,
    engine: Engine,
    /// The module workers run, with its revision; replaced by [`Pipeline::reload`], picked
    /// up between batches.
    pub(crate) module: watch::Sender<Version>,
    /// The revisions some partition worker has taken up (to process a batch with).
    taken_up: Mutex<std::collections::BTreeSet<u64>>,
    cache: Cache,
    pub(crate) source: Source,
    pub(crate) sink: KafkaSink,
    pub(crate) stats: Arc<PipelineStats>,
    /// Wakes workers blocked under the `block` policy.
    pub(crate) unblock: Notify,
    /// The pipeline's connection to the cluster.
    watch: Arc<BrokerWatch>,
    kafka: KafkaConfig,
    /// The partitions this runtime owns now, and whether that makes the pipeline stalled.
    ownership: Mutex<Ownership>,
    /// [`StartOptions::before_batch`].
    pub(crate) before_batch: Option<BatchHook>,
}

/// A module as one revision of a pipeline.
#[derive(Clone)]
pub(crate) struct Version {
    pub(crate) revision: u64,
    pub(crate) module: Module,
}

/// What a pipeline needs besides its spec, module, cache and cluster.
#[derive(Default)]
pub struct StartOptions {
    /// The module's revision in the pipeline's history (0 when there is none).
    pub revision: u64,
    /// The counters to count into, so they carry on across a pause and resume or an update.
    pub stats: Arc<PipelineStats>,
    /// The node id: the pipeline joins its consumer group as the static member of this name
    /// (unless its spec's `group.static_membership` is off). `None`: a dynamic member.
    pub node_id: Option<String>,
    /// Called before each batch with its partition and first offset: a seam for tests that
    /// need a worker to crash. `None` in the runtime.
    #[doc(hidden)]
    pub before_batch: Option<BatchHook>,
}

/// See [`StartOptions::before_batch`].
#[doc(hidden)]
pub type BatchHook = Arc<dyn Fn(&str, i32, i64) + Send + Sync>;

/// The partitions a pipeline owns, as its rebalances leave them.
#[derive(Debug, Default)]
struct Ownership {
    owned: usize,
    /// Since when it has owned none.
    none_since: Option<Instant>,
    /// Why it is stalled, when it is.
    stalled: Option<String>,
}

impl Pipeline {
    /// Starts `spec` with `module` on the cluster `kafka`, its cache calls going to `cache`
    /// (already namespaced for this pipeline).
    pub async fn start(
        spec: PipelineSpec,
        kafka: &KafkaConfig,
        engine: &Engine,
        module: Module,
        cache: Cache,
    ) -> anyhow::Result<Pipeline> {
        Pipeline::start_with(spec, kafka, engine, module, cache, StartOptions::default()).await
    }

    /// Like [`Pipeline::start`], with [`StartOptions`].
    pub async fn start_with(
        spec: PipelineSpec,
        kafka: &KafkaConfig,
        engine: &Engine,
        module: Module,
        cache: Cache,
        options: StartOptions,
    ) -> anyhow::Result<Pipeline> {
        spec.validate()?;
        kafka.validate().map_err(|e| anyhow::anyhow!("pipeline {}: {e}", spec.name))?;
        let (topics, consumer_spec, prepare_kafka) = (spec.topics(), spec.consumer_spec(), kafka.clone());
        tokio::task::spawn_blocking(move || {
            source::check_topics_exist(&consumer_spec.pipeline, &topics, &prepare_kafka)?;
            source::prepare_start(&consumer_spec, &prepare_kafka)
        })
        .await
        .context("start-offset task failed")??;
        let broker_watch = Arc::new(BrokerWatch::new(&spec.name, kafka));
        let sink = KafkaSink::new(&spec.name, kafka, broker_watch.clone())?;
        let (source, events) =
            source::subscribe(&spec.consumer_spec(), kafka, options.node_id.as_deref(), broker_watch.clone())?;
        let shared = Arc::new(Shared {
            spec,
            engine: engine.clone(),
            module: watch::Sender::new(Version { revision: options.revision, module }),
            taken_up: Mutex::default(),
            cache,
            source,
            sink,
            stats: options.stats,
            unblock: Notify::new(),
            watch: broker_watch,
            kafka: kafka.clone(),
            ownership: Mutex::new(Ownership { owned: 0, none_since: Some(Instant::now()), stalled: None }),
            before_batch: options.before_batch,
        });
        let (shutdown, shutdown_rx) = watch::channel(Stop::No);
        tokio::spawn(watch_for_stalls(shared.clone(), shutdown_rx.clone()));
        let task = tokio::spawn(run(shared.clone(), events, shutdown_rx));
        tracing::info!(pipeline = %shared.spec.name, module = %shared.module.borrow().module.digest(), "pipeline started");
        Ok(Pipeline { shared, shutdown, task })
    }

    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.shared.spec.name
    }

    /// The pipeline's spec.
    pub fn spec(&self) -> &PipelineSpec {
        &self.shared.spec
    }

    /// Counters and per-partition state, now.
    pub fn status(&self) -> PipelineStatus {
        self.observer().status()
    }

    /// A read-only handle on the pipeline's status that outlives this value's borrow: what the
    /// manager's reads use, without waiting for a change of the pipeline.
    pub fn observer(&self) -> PipelineObserver {
        PipelineObserver { shared: self.shared.clone() }
    }

    /// The module the pipeline runs now (workers switch to it at their next batch).
    pub fn module(&self) -> Module {
        self.shared.module.borrow().module.clone()
    }

    /// Replaces the pipeline's module, as revision `revision`, while it runs. Each partition
    /// worker finishes the batch in hand with the old module and processes every later batch
    /// with `module`: no record is processed by both, none is skipped, and consumption does
    /// not stop.
    ///
    /// Returns the revision this one supersedes before any partition took it up, if any: when
    /// reloads come faster than batches end, a worker goes straight to the newest module, and
    /// the revisions in between never process a record.
    pub fn reload(&self, module: Module, revision: u64) -> Option<u64> {
        let mut superseded = None;
        // Under the channel's lock: no worker takes the old revision up meanwhile.
        self.shared.module.send_modify(|current| {
            let taken_up = self.shared.taken_up.lock().unwrap_or_else(|p| p.into_inner());
            if !taken_up.contains(&current.revision) {
                superseded = Some(current.revision);
            }
            tracing::info!(
                pipeline = %self.shared.spec.name,
                from = %current.module.digest(),
                to = %module.digest(),
                revision,
                "reloading the module; partitions switch at their next batch"
            );
            *current = Version { revision, module };
        });
        // A new module is the usual fix for a record that blocks a partition: it tries it.
        self.shared.unblock.notify_waiters();
        if let Some(old) = superseded {
            tracing::info!(
                pipeline = %self.shared.spec.name,
                "revision {old} never processed a record here: revision {revision} replaced it before any partition took it up"
            );
        }
        superseded
    }

    /// Resumes partitions blocked under the `block` policy: each tries its failed record again.
    pub fn unblock(&self) {
        self.shared.unblock.notify_waiters();
    }

    /// Whether the pipeline is stalled: it has owned no partition for [`STALL_AFTER`] while
    /// its consumer group has records waiting and commits nothing.
    pub fn stalled(&self) -> Option<String> {
        self.observer().stalled()
    }

    /// Stops and leaves the consumer group (other members take the partitions over now):
    /// workers finish the batch in hand (waiting at most [`STOP_ACK_GRACE`] for its
    /// acknowledgements) or leave it uncommitted, stored offsets are committed, and the
    /// producer sends what it queued. Bounded even when the cluster is unreachable.
    pub async fn stop(self) {
        self.stop_as(Stop::Leave).await;
    }

    /// Like [`Pipeline::stop`], but for a restart of the runtime: a static member does not
    /// leave its group, so the restarted runtime gets its partitions back at once.
    pub async fn stop_for_restart(self) {
        self.stop_as(Stop::Restart).await;
    }

    async fn stop_as(self, how: Stop) {
        let _ = self.shutdown.send(how);
        let _ = self.task.await;
        tracing::info!(pipeline = %self.shared.spec.name, "pipeline stopped");
        // The last handle on the pipeline's Kafka clients closes them when dropped, which
        // blocks: it must hold neither an async thread nor a shutdown past its bound.
        let name = self.shared.spec.name.clone();
        let (closed_tx, closed) = tokio::sync::oneshot::channel();
        let shared = self.shared;
        let closing = std::thread::Builder::new().name(format!("close-{name}")).spawn(move || {
            drop(shared);
            let _ = closed_tx.send(());
        });
        if closing.is_ok() && tokio::time::timeout(STOP_CLOSE_TIMEOUT, closed).await.is_err() {
            tracing::warn!(
                pipeline = %name,
                "its Kafka clients did not close within {STOP_CLOSE_TIMEOUT:?}; they close in the background"
            );
        }
    }
}

/// A read-only handle on a running [`Pipeline`]'s status ([`Pipeline::observer`]). Cheap to
/// clone; reading takes only the short locks of the counters, never a change's.
#[derive(Clone)]
pub struct PipelineObserver {
    shared: Arc<Shared>,
}

impl PipelineObserver {
    /// The pipeline's counters and per-partition state, now.
    pub fn status(&self) -> PipelineStatus {
        let cache = PipelineCacheStatus {
            backend: self.shared.cache.kind().to_owned(),
            namespace: self.shared.cache.namespace().to_string(),
            stats: self.shared.cache.stats().snapshot(),
        };
        let module = self.shared.module.borrow().module.digest().to_string();
        let mut status = self.shared.stats.snapshot(&self.shared.spec.name, module, cache);
        {
            let ownership = self.shared.ownership.lock().unwrap_or_else(|p| p.into_inner());
            status.owned_partitions = ownership.owned;
            status.stalled = ownership.stalled.clone();
        }
        status.broker_outages = self.shared.watch.outages();
        status.broker_unreachable_ms = self.shared.watch.unreachable_for().map(|d| d.as_millis() as u64);
        (status.commit_failures, status.last_commit_error) = self.shared.source.commit_failures();
        for partition in &mut status.partitions {
            // The high watermark librdkafka last reported for the partition: no broker round trip.
            let high = self.shared.source.high_watermark(&partition.topic, partition.partition);
            if let (Some(high), Some(next)) = (high, partition.next_offset) {
                partition.lag = Some((high - next).max(0));
            }
        }
        status
    }

    /// Why the pipeline is stalled, when it is (see [`Pipeline::stalled`]).
    pub fn stalled(&self) -> Option<String> {
        self.shared.ownership.lock().unwrap_or_else(|p| p.into_inner()).stalled.clone()
    }
}

/// The pipeline's main task: polls the consumer (which runs the rebalance callbacks) and
/// starts and stops partition workers.
async fn run(
    shared: Arc<Shared>,
    mut events: mpsc::UnboundedReceiver<AssignmentEvent>,
    mut shutdown: watch::Receiver<Stop>,
) {
    let mut workers: HashMap<(String, i32), (watch::Sender<bool>, JoinHandle<()>)> = HashMap::new();
    // Workers of revoked partitions, told to stop but maybe still finishing a batch.
    let mut stopping: HashMap<(String, i32), JoinHandle<()>> = HashMap::new();
    // Workers that crashed, to start again (worker::supervise).
    let (crashed, mut crashes) = mpsc::unbounded_channel::<worker::Crash>();
    loop {
        tokio::select! {
            served = shared.source.serve_main_queue() => match served {
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(pipeline = %shared.spec.name, "kafka consumer: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
            Some(event) = events.recv() => match event {
                AssignmentEvent::Assigned(queues) => {
                    for (topic, partition, queue) in queues {
                        let key = (topic.clone(), partition);
                        let Some(queue) = shared.take_over_queue(&key, queue, stopping.remove(&key)).await else {
                            continue;
                        };
                        let (stop, stop_rx) = watch::channel(false);
                        let (first, crashes) = (worker::Restart::FIRST, crashed.clone());
                        let worker = worker::supervise(shared.clone(), topic, partition, queue, stop_rx, first, crashes);
                        workers.insert(key, (stop, tokio::spawn(worker)));
                    }
                    shared.set_owned(workers.len());
                }
                AssignmentEvent::Revoked(partitions) => {
                    stopping.retain(|_, handle| !handle.is_finished());
                    for key in partitions {
                        if let Some((stop, handle)) = workers.remove(&key) {
                            let _ = stop.send(true);
                            stopping.insert(key, handle);
                        }
                    }
                    shared.set_owned(workers.len());
                }
            },
            Some(crash) = crashes.recv() => {
                let key = (crash.topic.clone(), crash.partition);
                // Revoked meanwhile: its next owner starts from the last commit.
                let Some((stop, handle)) = workers.get_mut(&key) else { continue };
                if *stop.borrow() {
                    continue;
                }
                match shared.rewind(&crash).await {
                    Some(queue) => {
                        let Crash { topic, partition, restart } = crash;
                        let (stop_rx, crashes) = (stop.subscribe(), crashed.clone());
                        let worker = worker::supervise(shared.clone(), topic, partition, queue, stop_rx, restart, crashes);
                        *handle = tokio::spawn(worker);
                    }
                    None => {
                        // Tried again in a moment, unless the partition is revoked first.
                        let crashed = crashed.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(CRASH_RESTART_DELAY).await;
                            let _ = crashed.send(crash);
                        });
                    }
                }
            },
            _ = shutdown.changed() => break,
        }
    }
    let how = *shutdown.borrow();
    for (stop, _) in workers.values() {
        let _ = stop.send(true);
    }
    // Each worker gives up its batch after STOP_ACK_GRACE at most.
    for handle in workers.into_values().map(|(_, handle)| handle).chain(stopping.into_values()) {
        let _ = handle.await;
    }
    let source = shared.source.clone();
    let commit = tokio::task::spawn_blocking(move || source.commit_stored());
    match tokio::time::timeout(STOP_COMMIT_TIMEOUT, commit).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(
            pipeline = %shared.spec.name,
            "the final commit failed: {e}; records processed since the last commit will be processed again"
        ),
        Ok(Err(e)) => tracing::warn!(pipeline = %shared.spec.name, "final commit task failed: {e}"),
        Err(_) => tracing::warn!(
            pipeline = %shared.spec.name,
            "the final commit did not finish within {STOP_COMMIT_TIMEOUT:?}; records processed since the last commit will be processed again"
        ),
    }
    if how == Stop::Leave {
        // A static member leaves only when it unsubscribes; on close it stays (KIP-345).
        shared.source.leave(tokio::time::Instant::now() + STOP_LEAVE_TIMEOUT).await;
    }
    let sink = shared.clone();
    let flushed = tokio::task::spawn_blocking(move || sink.sink.flush(STOP_FLUSH_TIMEOUT)).await;
    if !matches!(flushed, Ok(true)) {
        tracing::warn!(
            pipeline = %shared.spec.name,
            "the producer did not send everything it queued within {STOP_FLUSH_TIMEOUT:?}; those records' inputs were not committed and will be processed again"
        );
    }
}

/// Marks the pipeline stalled, or not, from what its group looks like on the broker: every
/// [`STALL_CHECK_INTERVAL`], once it has owned no partition for [`STALL_AFTER`], it asks the
/// broker for its group's lag and committed offsets. Records waiting while nothing is
/// committed between two checks (no other member makes progress either) is a stall.
async fn watch_for_stalls(shared: Arc<Shared>, mut shutdown: watch::Receiver<Stop>) {
    let mut committed_before: Option<i64> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(STALL_CHECK_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
        let none_for = shared.ownership.lock().unwrap_or_else(|p| p.into_inner()).none_since.map(|t| t.elapsed());
        let Some(none_for) = none_for.filter(|d| *d >= STALL_AFTER) else {
            committed_before = None;
            continue;
        };
        let (spec, kafka) = (shared.spec.consumer_spec(), shared.kafka.clone());
        let offsets = tokio::task::spawn_blocking(move || source::group_offsets(&spec, &kafka)).await;
        let owning_none = format!("owns no partitions for {} s", none_for.as_secs());
        let verdict = match offsets {
            Ok(Ok(offsets)) => {
                let lag: i64 = offsets.iter().map(|o| o.lag).sum();
                let committed: i64 = offsets.iter().filter_map(|o| o.committed).sum();
                let progress = committed_before.is_none_or(|before| before != committed);
                committed_before = Some(committed);
                (lag > 0 && !progress).then(|| {
                    format!("{owning_none} while its consumer group has {lag} records waiting and commits nothing")
                })
            }
            Ok(Err(e)) => Some(format!("{owning_none}, and its consumer group cannot be read: {e:#}")),
            Err(_) => continue,
        };
        // A rebalance may have given partitions meanwhile: it clears the stall itself.
        if shared.ownership.lock().unwrap_or_else(|p| p.into_inner()).owned == 0 {
            shared.set_stalled(verdict);
        }
    }
}

impl Shared {
    /// Records how many partitions the pipeline owns after a rebalance.
    fn set_owned(&self, owned: usize) {
        let mut ownership = self.ownership.lock().unwrap_or_else(|p| p.into_inner());
        ownership.owned = owned;
        match (owned, ownership.none_since) {
            (0, None) => ownership.none_since = Some(Instant::now()),
            (0, Some(_)) => {}
            (_, _) => ownership.none_since = None,
        }
        drop(ownership);
        if owned > 0 {
            self.set_stalled(None);
        }
    }

    /// Sets or clears the stall, logging each change once.
    fn set_stalled(&self, stalled: Option<String>) {
        let mut ownership = self.ownership.lock().unwrap_or_else(|p| p.into_inner());
        match (&ownership.stalled, &stalled) {
            (None, Some(reason)) => tracing::warn!(pipeline = %self.spec.name, "pipeline stalled: it {reason}"),
            (Some(_), None) => {
                tracing::info!(pipeline = %self.spec.name, owned = ownership.owned, "pipeline no longer stalled")
            }
            _ => {}
        }
        ownership.stalled = stalled;
    }

    /// The queue a new worker of partition `key` reads. When the partition's previous worker
    /// (revoked, then assigned back to this runtime) may still hold the old queue, waits for it
    /// to stop and takes the queue again: dropping a partition queue handle turns off the
    /// wake-ups of every handle on that partition, so the old one must go first.
    async fn take_over_queue(
        &self,
        key: &(String, i32),
        queue: source::PartitionQueue,
        previous: Option<JoinHandle<()>>,
    ) -> Option<source::PartitionQueue> {
        let Some(previous) = previous else { return Some(queue) };
        let (topic, partition) = (&key.0, key.1);
        if tokio::time::timeout(PREVIOUS_WORKER_WAIT, previous).await.is_err() {
            tracing::warn!(pipeline = %self.spec.name, %topic, partition, "the previous worker did not stop in time");
        }
        drop(queue);
        let queue = self.source.partition_queue(topic, partition);
        if queue.is_none() {
            tracing::warn!(pipeline = %self.spec.name, %topic, partition, "cannot take the partition's queue");
        }
        queue
    }

    /// The queue of a crashed worker's partition, rewound to the crash's first offset not
    /// done. `None`, logged, when that failed (the partition may be on its way out).
    async fn rewind(&self, crash: &Crash) -> Option<source::PartitionQueue> {
        let (topic, partition, resume) = (&crash.topic, crash.partition, crash.restart.resume);
        if resume >= 0 {
            let (source, rewind_topic) = (self.source.clone(), topic.clone());
            let rewound = tokio::task::spawn_blocking(move || source.seek(&rewind_topic, partition, resume)).await;
            let failed = match rewound {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(e) => Some(e.to_string()),
            };
            if let Some(e) = failed {
                tracing::warn!(
                    pipeline = %self.spec.name, %topic, partition,
                    "cannot rewind the partition to offset {resume} after its worker crashed: {e}; trying again in {CRASH_RESTART_DELAY:?}"
                );
                return None;
            }
        }
        let queue = self.source.partition_queue(topic, partition);
        if queue.is_none() {
            tracing::warn!(
                pipeline = %self.spec.name, %topic, partition,
                "cannot take the partition's queue after its worker crashed; trying again in {CRASH_RESTART_DELAY:?}"
            );
        }
        queue
    }

    fn worker(
        self: &Arc<Self>,
        topic: String,
        partition: i32,
        queue: source::PartitionQueue,
        stop: watch::Receiver<bool>,
        position: Arc<std::sync::atomic::AtomicI64>,
        hold_at: Option<i64>,
    ) -> PartitionWorker {
        let mut module = self.module.subscribe();
        let version = self.take_up(&mut module);
        let instance = self.instance_for(&topic, partition, &version.module, version.revision);
        PartitionWorker {
            shared: self.clone(),
            topic,
            partition,
            queue,
            instance,
            revision: version.revision,
            module,
            stop,
            transactional: None,
            position,
            hold_at,
        }
    }

    /// The pipeline's current version, marked as taken up by a worker (under the channel's
    /// lock, so [`Pipeline::reload`] sees it).
    pub(crate) fn take_up(&self, module: &mut watch::Receiver<Version>) -> Version {
        let current = module.borrow_and_update();
        self.taken_up.lock().unwrap_or_else(|p| p.into_inner()).insert(current.revision);
        current.clone()
    }

    pub(crate) fn set_partition_state(&self, topic: &str, partition: i32, state: PartitionState) {
        self.stats.partition(topic, partition, |p| {
            p.state = state;
            p.owned = state != PartitionState::Stopped;
        });
    }

    pub(crate) fn set_partition_offset(&self, topic: &str, partition: i32, next_offset: i64) {
        self.stats.partition(topic, partition, |p| p.next_offset = Some(next_offset));
    }

    /// Records that a partition's worker now runs `module` as `revision`, switched at
    /// `offset` in `took`.
    pub(crate) fn set_partition_module(
        &self,
        topic: &str,
        partition: i32,
        module: &Module,
        revision: u64,
        switch: Option<(i64, Duration)>,
    ) {
        self.stats.partition(topic, partition, |p| {
            p.module = Some(module.digest().to_string());
            p.revision = Some(revision);
            if let Some((offset, took)) = switch {
                p.last_switch = Some(ModuleSwitch { offset, micros: took.as_micros() as u64 });
            }
        });
    }

    /// A new worker's function instance for `module`, as [`Shared::worker`] builds it.
    /// Its guest lines go to the pipeline's function log, marked with `revision`.
    pub(crate) fn instance_for(&self, topic: &str, partition: i32, module: &Module, revision: u64) -> FunctionInstance {
        let sink = PartitionLogSink { log: self.stats.logs.clone(), topic: topic.to_owned(), partition, revision };
        let context = FunctionContext {
            name: format!("pipeline {} partition {topic}/{partition}", self.spec.name).into(),
            cache: self.cache.clone(),
            config: Arc::new(self.spec.config.clone()),
            log_sink: Some(Arc::new(sink)),
        };
        FunctionInstance::new(&self.engine, module, context)
    }
}

/// Where a partition worker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum PartitionState {
    /// Setting up before its first batch: in exactly-once mode, the partition's transactional
    /// producer and the position its cache writes were applied through (a setup that fails is
    /// tried again, counted in `setup_failures` and shown as the last error); after a crash,
    /// waiting to start a new worker (`worker_crashes`).
    Starting,
    /// Processing records.
    Running,
    /// Held at a failed record under the `block` policy.
    Blocked {
        /// The failed record's offset.
        offset: i64,
    },
    /// Not assigned to this runtime any more: the row is history, what this runtime last
    /// did with the partition.
    Stopped,
}

/// A pipeline's counters and its function log. They outlive a [`Pipeline`] when passed in
/// its [`StartOptions`], so they carry on across a pause and resume or an update.
#[derive(Default)]
pub struct PipelineStats {
    /// What the function said and why records failed, on this node.
    logs: Arc<FunctionLog>,
    records_in: AtomicU64,
    records_out: AtomicU64,
    batches: AtomicU64,
    failed: AtomicU64,
    dead_letters: AtomicU64,
    skipped: AtomicU64,
    transactions_committed: AtomicU64,
    transactions_aborted: AtomicU64,
    effects_already_applied: AtomicU64,
    delivery_failures: AtomicU64,
    consume_errors: AtomicU64,
    setup_failures: AtomicU64,
    worker_crashes: AtomicU64,
    /// When a consume error was last logged at WARN (see [`CONSUME_ERROR_LOG_INTERVAL`]).
    consume_error_logged: Mutex<Option<Instant>>,
    /// Failed calls, splits, re-runs and rebuilt instances.
    faults: failure::Faults,
    last_error: Mutex<Option<String>>,
    partitions: Mutex<BTreeMap<(String, i32), PartitionStatus>>,
    /// Time from a batch's first record to its results acknowledged (or dead-lettered).
    batch_latency: LatencyHistogram,
}

impl PipelineStats {
    /// The pipeline's function log on this node.
    pub fn function_log(&self) -> &Arc<FunctionLog> {
        &self.logs
    }

    fn record_batch(&self, records: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.records_in.fetch_add(records as u64, Ordering::Relaxed);
    }

    fn record_batch_done(&self, started: Instant) {
        self.batch_latency.record(started.elapsed());
    }

    fn record_transaction(&self, committed: bool) {
        let counter = if committed { &self.transactions_committed } else { &self.transactions_aborted };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// An aborted transaction, whose cause the status shows as the latest error.
    fn record_transaction_failure(&self, error: String) {
        self.record_transaction(false);
        self.set_last_error(error);
    }

    /// A failed attempt to produce a batch's results, whose cause the status shows as the
    /// latest error.
    fn record_delivery_failure(&self, error: String) {
        self.delivery_failures.fetch_add(1, Ordering::Relaxed);
        self.set_last_error(error);
    }

    /// A failed attempt to set up a partition's worker, whose cause the status shows as the
    /// latest error.
    fn record_setup_failure(&self, error: String) {
        self.setup_failures.fetch_add(1, Ordering::Relaxed);
        self.set_last_error(error);
    }

    /// A partition worker that crashed, whose panic the status shows as the latest error.
    fn record_worker_crash(&self, error: String) {
        self.worker_crashes.fetch_add(1, Ordering::Relaxed);
        self.set_last_error(error);
    }

    /// Makes `error` the status's latest error.
    fn set_last_error(&self, error: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
    }

    /// A consume error; `true` when it should be logged at WARN: the first one, then at most
    /// one per [`CONSUME_ERROR_LOG_INTERVAL`] (a lasting error repeats many times a second).
    fn record_consume_error(&self) -> bool {
        self.consume_errors.fetch_add(1, Ordering::Relaxed);
        let mut logged = self.consume_error_logged.lock().unwrap_or_else(|p| p.into_inner());
        let due = logged.is_none_or(|at| at.elapsed() >= CONSUME_ERROR_LOG_INTERVAL);
        if due {
            *logged = Some(Instant::now());
        }
        due
    }

    fn record_effects_already_applied(&self) {
        self.effects_already_applied.fetch_add(1, Ordering::Relaxed);
    }

    fn record_outputs(&self, outputs: usize) {
        self.records_out.fetch_add(outputs as u64, Ordering::Relaxed);
    }

    fn record_failure(&self, policy: FailurePolicy, error: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        match policy {
            FailurePolicy::DeadLetter => self.dead_letters.fetch_add(1, Ordering::Relaxed),
            FailurePolicy::Skip => self.skipped.fetch_add(1, Ordering::Relaxed),
            FailurePolicy::Block => 0,
        };
        self.set_last_error(error);
    }

    fn partition(&self, topic: &str, partition: i32, update: impl FnOnce(&mut PartitionStatus)) {
        let mut partitions = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        let entry = partitions.entry((topic.to_owned(), partition)).or_insert_with(|| PartitionStatus {
            topic: topic.to_owned(),
            partition,
            next_offset: None,
            lag: None,
            module: None,
            revision: None,
            last_switch: None,
            owned: true,
            state: PartitionState::Running,
        });
        update(entry);
    }

    pub(crate) fn snapshot(&self, name: &str, module: String, cache: PipelineCacheStatus) -> PipelineStatus {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PipelineStatus {
            name: name.to_owned(),
            module,
            records_in: load(&self.records_in),
            records_out: load(&self.records_out),
            batches: load(&self.batches),
            failed: load(&self.failed),
            dead_letters: load(&self.dead_letters),
            skipped: load(&self.skipped),
            delivery_failures: load(&self.delivery_failures),
            consume_errors: load(&self.consume_errors),
            setup_failures: load(&self.setup_failures),
            worker_crashes: load(&self.worker_crashes),
            transactions: TransactionCounts {
                committed: load(&self.transactions_committed),
                aborted: load(&self.transactions_aborted),
                effects_already_applied: load(&self.effects_already_applied),
            },
            faults: self.faults.snapshot(),
            last_error: self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            partitions: self.partitions.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect(),
            owned_partitions: 0,
            stalled: None,
            broker_outages: 0,
            broker_unreachable_ms: None,
            commit_failures: 0,
            last_commit_error: None,
            batch_latency: self.batch_latency.snapshot(),
            cache,
        }
    }
}

/// One partition as seen by this runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema, Deserialize)]
pub struct PartitionStatus {
    /// Input topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The first offset not done: the offset stored for commit, or, before the worker's first
    /// batch is done, that batch's first offset. `None` until the worker has a record.
    pub next_offset: Option<i64>,
    /// Records from `next_offset` up to the partition's high watermark as last seen by the
    /// consumer; `None` until the worker has a record.
    pub lag: Option<i64>,
    /// The module digest of the worker's last batch.
    pub module: Option<String>,
    /// The pipeline revision of that module.
    pub revision: Option<u64>,
    /// Whether this runtime owns the partition now; `false`: the row is history.
    pub owned: bool,
    /// The partition's last switch to a reloaded module.
    pub last_switch: Option<ModuleSwitch>,
    /// The worker's state.
    #[serde(flatten)]
    pub state: PartitionState,
}

/// Where and how fast a partition switched to a reloaded module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema, Deserialize)]
pub struct ModuleSwitch {
    /// The first offset processed by the new module.
    pub offset: i64,
    /// The time the switch added to the partition's processing: preparing an instance of the
    /// new module, in microseconds.
    pub micros: u64,
}

/// A pipeline's counters and partitions at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema, Deserialize)]
pub struct PipelineStatus {
    /// The pipeline.
    pub name: String,
    /// The module digest running.
    pub module: String,
    /// Records consumed (counted per batch processed, retries not counted again).
    pub records_in: u64,
    /// Outputs produced and acknowledged.
    pub records_out: u64,
    /// Batches processed.
    pub batches: u64,
    /// Records that failed for good.
    pub failed: u64,
    /// Records written to the dead-letter topic.
    pub dead_letters: u64,
    /// Records skipped under the `skip` policy.
    pub skipped: u64,
    /// Attempts to produce a batch's outputs and dead letters that failed and were made
    /// again (the batch's partition waits meanwhile); the latest error names the batch.
    #[serde(default)]
    pub delivery_failures: u64,
    /// Errors the consumer handed a partition's worker instead of a record (the worker waits
    /// a moment and reads again).
    #[serde(default)]
    pub consume_errors: u64,
    /// Failed attempts to set up a partition's worker (in exactly-once mode, its
    /// transactional producer or applied position); the partition is `starting` meanwhile.
    #[serde(default)]
    pub setup_failures: u64,
    /// Partition workers that crashed (a panic: a bug in the runtime, never the function's
    /// doing). The partition is started again from its first record not done, after
    /// [`CRASH_RESTART_DELAY`] (doubled for each crash in a row); the panic is the last error.
    #[serde(default)]
    pub worker_crashes: u64,
    /// Exactly-once mode's transactions (all zero in at-least-once mode).
    #[serde(default)]
    pub transactions: TransactionCounts,
    /// Failed calls by kind (traps and limits), splits, re-runs and rebuilt instances: what
    /// failure handling did, even when every record succeeded in the end.
    #[serde(default)]
    pub faults: FaultCounts,
    /// The latest failure, with its pipeline, partition and offset.
    pub last_error: Option<String>,
    /// Partitions this runtime has worked on.
    pub partitions: Vec<PartitionStatus>,
    /// Partitions this runtime owns now.
    pub owned_partitions: usize,
    /// Why the pipeline is stalled, when it is: it has owned no partition for
    /// [`STALL_AFTER`] while its consumer group has records waiting and commits nothing.
    pub stalled: Option<String>,
    /// Times the cluster became unreachable since the pipeline started.
    pub broker_outages: u64,
    /// How long the cluster has been unreachable, during an outage.
    pub broker_unreachable_ms: Option<u64>,
    /// Offset commits that failed since the pipeline started (the group coordinator refused
    /// them, or they did not reach it). Until one succeeds, the records processed since the
    /// last commit will be processed again by the partitions' next owner.
    #[serde(default)]
    pub commit_failures: u64,
    /// The latest failed commit's error.
    #[serde(default)]
    pub last_commit_error: Option<String>,
    /// Time from a batch's first record to its results acknowledged.
    pub batch_latency: LatencySnapshot,
    /// The function's cache calls.
    pub cache: PipelineCacheStatus,
}

impl PipelineStatus {
    /// Partitions this runtime holds at a failed record under the `block` policy.
    pub fn blocked_partitions(&self) -> usize {
        self.partitions.iter().filter(|p| p.owned && matches!(p.state, PartitionState::Blocked { .. })).count()
    }
}

/// What exactly-once mode did (docs/delivery.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema, Deserialize)]
pub struct TransactionCounts {
    /// Batches whose outputs and input offset were committed in a Kafka transaction.
    pub committed: u64,
    /// Transactions aborted (a produce or commit failed, or the worker stopped mid-batch);
    /// their batches were run or delivered again.
    pub aborted: u64,
    /// Batches run again after a crash or a rebalance whose cache writes an earlier attempt had
    /// already applied: they were not applied twice.
    pub effects_already_applied: u64,
}

/// A pipeline's cache, as its function used it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema, Deserialize)]
pub struct PipelineCacheStatus {
    /// `memory`, `redis` or `memcached`.
    pub backend: String,
    /// The key namespace.
    pub namespace: String,
    /// Hits, misses, errors, timeouts and latency.
    pub stats: CacheStatsSnapshot,
}

impl PipelineCacheStatus {
    /// Hits over lookups, when there were lookups.
    pub fn hit_ratio(&self) -> Option<f64> {
        let lookups = self.stats.hits + self.stats.misses;
        (lookups > 0).then(|| self.stats.hits as f64 / lookups as f64)
    }
}
