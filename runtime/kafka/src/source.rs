//! The Kafka source: one consumer per pipeline in the pipeline's consumer group, with one
//! queue per assigned partition so each partition worker reads its own records in order.
//!
//! This module owns the consumer's configuration (offsets are stored only by the pipeline,
//! after processing, and committed from what was stored), the rebalance callbacks (which hand
//! partition queues to the pipeline and take them back), the start position of a new consumer
//! group and the group's offsets. It is given a [`ConsumerSpec`], never a pipeline's spec, and
//! does not process or produce anything: [`Source`] and [`PartitionQueue`] are all the
//! pipeline sees of the consumer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, ConsumerGroupMetadata, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc;

use sluice_record::InputRecord;

use crate::group::{GroupSettings, StartPosition};
use crate::{BrokerWatch, KafkaConfig};

mod headers;

/// Time allowed for metadata and offset requests to the broker.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often librdkafka reports the partitions' high watermarks, from which lag is computed.
const STATISTICS_INTERVAL: Duration = Duration::from_secs(2);

/// What the source needs to know of a pipeline.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    /// The pipeline's name, for errors and logs.
    pub pipeline: String,
    /// The consumer group.
    pub group_id: String,
    /// The topics read.
    pub topics: Vec<String>,
    /// Where a new group starts.
    pub start: StartPosition,
    /// How the consumer takes part in its group.
    pub group: GroupSettings,
}

type KafkaConsumer = StreamConsumer<SourceContext>;

/// A pipeline's consumer, subscribed to its topics: it hands out partition queues, stores the
/// offsets the pipeline processed and commits them. Cheap to clone.
#[derive(Clone)]
pub struct Source {
    consumer: Arc<KafkaConsumer>,
    pipeline: Arc<str>,
}

/// One assigned partition's queue of records.
pub struct PartitionQueue(StreamPartitionQueue<SourceContext>);

impl PartitionQueue {
    /// The partition's next record.
    pub async fn next(&self) -> Result<InputRecord, KafkaError> {
        self.0.recv().await.map(|message| input_record(&message))
    }
}

/// A change of the partitions this consumer owns.
pub enum AssignmentEvent {
    /// Partitions now owned, each with its queue.
    Assigned(Vec<(String, i32, PartitionQueue)>),
    /// Partitions taken away: their workers must stop and not commit further.
    Revoked(Vec<(String, i32)>),
}

/// Rebalance callbacks: they run on the task that polls the consumer's main queue.
#[doc(hidden)]
pub struct SourceContext {
    pipeline: String,
    events: mpsc::UnboundedSender<AssignmentEvent>,
    consumer: OnceLock<Weak<KafkaConsumer>>,
    /// The high watermark of each fetched partition, from librdkafka's last statistics.
    high_watermarks: Mutex<HashMap<(String, i32), i64>>,
    /// The pipeline's connection to the cluster, shared with its sink.
    watch: Arc<BrokerWatch>,
    /// Offset commits the group coordinator refused or that did not reach it.
    commits: CommitFailures,
}

/// What went wrong with the consumer's offset commits: how often, the latest error, and
/// whether the last commit failed (a failure after a success starts a streak, logged once).
#[derive(Default)]
struct CommitFailures {
    count: AtomicU64,
    failing: AtomicBool,
    last: Mutex<Option<String>>,
}

impl SourceContext {
    /// The partition's high watermark (the offset after its last record) as last reported.
    fn high_watermark(&self, topic: &str, partition: i32) -> Option<i64> {
        let watermarks = self.high_watermarks.lock().unwrap_or_else(|p| p.into_inner());
        watermarks.get(&(topic.to_owned(), partition)).copied().filter(|&high| high >= 0)
    }
}

impl ClientContext for SourceContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.watch.error("consumer", &error, reason);
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        self.watch.log("consumer", level, facility, message);
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        for broker in statistics.brokers.values().filter(|b| b.nodeid >= 0) {
            self.watch.broker_state(&broker.state);
        }
        let mut watermarks = self.high_watermarks.lock().unwrap_or_else(|p| p.into_inner());
        for (name, topic) in statistics.topics {
            for (id, partition) in topic.partitions {
                // librdkafka's internal "unassigned" partition is -1.
                if id >= 0 && partition.hi_offset >= 0 {
                    watermarks.insert((name.clone(), id), partition.hi_offset);
                }
            }
        }
    }
}

/// A commit's result, with "nothing was stored since the last commit" as the success it is.
fn nothing_to_commit_is_done(result: Result<(), KafkaError>) -> Result<(), KafkaError> {
    match result {
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
        result => result,
    }
}

fn partitions(list: &TopicPartitionList) -> Vec<(String, i32)> {
    list.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect()
}

impl ConsumerContext for SourceContext {
    /// Every commit's answer, automatic ones included: a failed commit is counted, kept as the
    /// latest commit error and logged once per streak, since until commits work again the
    /// records processed since the last one will be processed again by the partition's next
    /// owner.
    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, _: &TopicPartitionList) {
        match nothing_to_commit_is_done(result) {
            Ok(()) => {
                if self.commits.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(pipeline = %self.pipeline, "offset commits succeed again");
                }
            }
            Err(e) => {
                self.commits.count.fetch_add(1, Ordering::Relaxed);
                *self.commits.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                if !self.commits.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        pipeline = %self.pipeline,
                        "committing offsets failed: {e}; until a commit succeeds, the records processed since the \
                         last one will be processed again after a rebalance or restart"
                    );
                } else {
                    tracing::debug!(pipeline = %self.pipeline, "committing offsets failed again: {e}");
                }
            }
        }
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let revoked = partitions(list);
            tracing::info!(pipeline = %self.pipeline, ?revoked, "partitions revoked");
            let _ = self.events.send(AssignmentEvent::Revoked(revoked));
            // Commit what the workers have stored, so the next owner starts after it. Work
            // still in flight is not stored from now on and will be processed again there.
            if let Err(e) = nothing_to_commit_is_done(consumer.commit_consumer_state(CommitMode::Sync)) {
                tracing::warn!(
                    pipeline = %self.pipeline,
                    "the commit on revoke failed: {e}; the next owner processes again what was processed since the last commit"
                );
            }
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(list) = rebalance else { return };
        let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else { return };
        // Split each partition's queue here, before any of its records can reach the main
        // queue.
        let assigned: Vec<_> = partitions(list)
            .into_iter()
            .filter_map(|(topic, partition)| {
                let queue = consumer.split_partition_queue(&topic, partition)?;
                Some((topic, partition, PartitionQueue(queue)))
            })
            .collect();
        tracing::info!(
            pipeline = %self.pipeline,
            assigned = ?assigned.iter().map(|(t, p, _)| (t.as_str(), *p)).collect::<Vec<_>>(),
            "partitions assigned"
        );
        let _ = self.events.send(AssignmentEvent::Assigned(assigned));
    }
}

/// Creates the pipeline's consumer, subscribed to its inputs, and the channel on which it
/// announces assignments.
///
/// With `node_id` and [`GroupSettings::static_membership`](GroupSettings)
/// the consumer joins as the static member `node_id` (`group.instance.id`): after a restart it
/// is the same member and gets its partitions back without waiting for the broker to expire
/// the member it was before.
pub fn subscribe(
    spec: &ConsumerSpec,
    kafka: &KafkaConfig,
    node_id: Option<&str>,
    watch: Arc<BrokerWatch>,
) -> anyhow::Result<(Source, mpsc::UnboundedReceiver<AssignmentEvent>)> {
    let (events, receiver) = mpsc::unbounded_channel();
    let context = SourceContext {
        pipeline: spec.pipeline.clone(),
        events,
        consumer: OnceLock::new(),
        high_watermarks: Mutex::default(),
        watch,
        commits: CommitFailures::default(),
    };
    let reset = match spec.start {
        StartPosition::Latest => "latest",
        _ => "earliest",
    };
    let mut config = kafka.client_config();
    if let (Some(node_id), true) = (node_id, spec.group.static_membership) {
        config.set("group.instance.id", node_id);
    }
    let consumer: KafkaConsumer = config
        .set("group.id", &spec.group_id)
        .set("session.timeout.ms", spec.group.session_timeout_ms.to_string())
        .set("heartbeat.interval.ms", spec.group.heartbeat_interval_ms.to_string())
        .set("client.id", format!("sluice-{}", spec.pipeline))
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", reset)
        .set("statistics.interval.ms", STATISTICS_INTERVAL.as_millis().to_string())
        .create_with_context(context)
        .with_context(|| format!("pipeline {}: cannot create the Kafka consumer", spec.pipeline))?;
    let consumer = Arc::new(consumer);
    let _ = consumer.context().consumer.set(Arc::downgrade(&consumer));
    let topics: Vec<&str> = spec.topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .with_context(|| format!("pipeline {}: cannot subscribe to {topics:?}", spec.pipeline))?;
    Ok((Source { consumer, pipeline: spec.pipeline.as_str().into() }, receiver))
}

impl Source {
    /// Serves the consumer's main queue once: rebalances and errors are handled while it is
    /// polled. A record that reached the main queue before its partition queue was split is
    /// rewound, so that its partition's worker reads it in order.
    pub async fn serve_main_queue(&self) -> Result<(), KafkaError> {
        let message = self.consumer.recv().await?;
        let (topic, partition, offset) = (message.topic().to_owned(), message.partition(), message.offset());
        drop(message);
        tracing::debug!(pipeline = %self.pipeline, %topic, partition, offset, "rewinding a record read on the main queue");
        if let Err(e) = self.consumer.seek(&topic, partition, Offset::Offset(offset), Duration::from_secs(5)) {
            tracing::warn!(pipeline = %self.pipeline, %topic, partition, "cannot rewind to offset {offset}: {e}");
        }
        Ok(())
    }

    /// Moves an assigned partition's fetch position to `offset`: the records from there are
    /// read again, and those fetched after it are dropped. Blocks for up to 5 s: call it off
    /// the async executor.
    pub fn seek(&self, topic: &str, partition: i32, offset: i64) -> Result<(), KafkaError> {
        self.consumer.seek(topic, partition, Offset::Offset(offset), Duration::from_secs(5))
    }

    /// A new queue of an assigned partition, for a worker that takes over from another.
    pub fn partition_queue(&self, topic: &str, partition: i32) -> Option<PartitionQueue> {
        self.consumer.split_partition_queue(topic, partition).map(PartitionQueue)
    }

    /// Stores `next_offset` (the offset after the last processed record) of a partition for
    /// the next commit. Fails when the partition was revoked meanwhile.
    pub fn store(&self, topic: &str, partition: i32, next_offset: i64) -> Result<(), KafkaError> {
        // `store_offsets` stores the offsets as given (`store_offset` would add one).
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(topic, partition, Offset::Offset(next_offset))?;
        self.consumer.store_offsets(&list)?;
        list.elements().first().map_or(Ok(()), |element| element.error())
    }

    /// The consumer's group metadata, which a transaction sends with the offsets it commits
    /// for this consumer ([`crate::sink::KafkaSink::commit_transaction`]).
    pub fn group_metadata(&self) -> Option<ConsumerGroupMetadata> {
        self.consumer.group_metadata()
    }

    /// The partition's high watermark (the offset after its last record) as librdkafka last
    /// reported it: no broker round trip.
    pub fn high_watermark(&self, topic: &str, partition: i32) -> Option<i64> {
        self.consumer.context().high_watermark(topic, partition)
    }

    /// Offset commits that failed since the pipeline started, and the latest one's error.
    pub fn commit_failures(&self) -> (u64, Option<String>) {
        let commits = &self.consumer.context().commits;
        let last = commits.last.lock().unwrap_or_else(|p| p.into_inner()).clone();
        (commits.count.load(Ordering::Relaxed), last)
    }

    /// Commits the stored offsets and waits for the answer; nothing stored is no error.
    /// Blocks: call it off the async executor.
    pub fn commit_stored(&self) -> Result<(), KafkaError> {
        nothing_to_commit_is_done(self.consumer.commit_consumer_state(CommitMode::Sync))
    }

    /// Leaves the group: unsubscribes (a static member leaves only when it unsubscribes; on
    /// close it stays, KIP-345) and serves the main queue until `deadline`, during which the
    /// revocation and the LeaveGroup request are sent.
    pub async fn leave(&self, deadline: tokio::time::Instant) {
        self.consumer.unsubscribe();
        while let Ok(polled) = tokio::time::timeout_at(deadline, self.consumer.recv()).await {
            if polled.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// For a `timestamp` or `offsets` start position, commits the start offsets of a consumer
/// group that has none yet, before the pipeline joins it. Earliest and latest need nothing:
/// the consumer's `auto.offset.reset` applies them.
pub fn prepare_start(spec: &ConsumerSpec, kafka: &KafkaConfig) -> anyhow::Result<()> {
    if matches!(spec.start, StartPosition::Earliest | StartPosition::Latest) {
        return Ok(());
    }
    let consumer = group_client(spec, kafka)?;
    let all = input_partitions(&consumer, spec)?;
    let committed = consumer.committed_offsets(all.clone(), REQUEST_TIMEOUT)?;
    if committed.elements().iter().any(|e| matches!(e.offset(), Offset::Offset(_))) {
        return Ok(());
    }
    let start = match &spec.start {
        StartPosition::Timestamp(ms) => offsets_for_time(&consumer, &all, *ms)?,
        StartPosition::Offsets(offsets) => {
            let mut list = TopicPartitionList::new();
            for e in all.elements() {
                let at = offsets.get(e.topic()).and_then(|p| p.get(&e.partition()));
                list.add_partition_offset(
                    e.topic(),
                    e.partition(),
                    at.map_or(Offset::Beginning, |o| Offset::Offset(*o)),
                )?;
            }
            list
        }
        StartPosition::Earliest | StartPosition::Latest => unreachable!("handled above"),
    };
    consumer
        .commit(&start, CommitMode::Sync)
        .with_context(|| format!("pipeline {}: cannot commit start offsets", spec.pipeline))?;
    tracing::info!(pipeline = %spec.pipeline, "start offsets committed for a new consumer group");
    Ok(())
}

/// Checks that every topic a pipeline reads or writes exists, so a typo is an error at start
/// rather than a pipeline that waits forever.
pub fn check_topics_exist(pipeline: &str, topics: &[String], kafka: &KafkaConfig) -> anyhow::Result<()> {
    let missing = missing_topics(pipeline, topics, kafka)?;
    if !missing.is_empty() {
        anyhow::bail!("pipeline {pipeline}: topics {missing:?} do not exist on {}; create them first", kafka.brokers);
    }
    Ok(())
}

/// Copies a consumed message into an [`InputRecord`].
fn input_record(message: &BorrowedMessage<'_>) -> InputRecord {
    InputRecord {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        timestamp_ms: message.timestamp().to_millis(),
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
        headers: headers::message_headers(message),
    }
}

/// Bytes of a record counted against a batch's byte budget.
pub fn record_bytes(record: &InputRecord) -> usize {
    record.key.as_ref().map_or(0, Vec::len) + record.value.as_ref().map_or(0, Vec::len)
}

/// One partition of a pipeline's input as its consumer group stands on the broker.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema, serde::Deserialize)]
pub struct PartitionOffsets {
    /// Input topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The group's committed offset (the next record to process); `None` when nothing is
    /// committed yet.
    pub committed: Option<i64>,
    /// The offset after the partition's last record.
    pub high_watermark: i64,
    /// Records not yet processed: from the committed offset (or the start of the partition)
    /// to the high watermark.
    pub lag: i64,
}

/// A consumer in the pipeline's group that never joins it: it reads and commits the group's
/// offsets while the pipeline is stopped (or not started yet), or beside it.
fn group_client(spec: &ConsumerSpec, kafka: &KafkaConfig) -> anyhow::Result<BaseConsumer> {
    kafka
        .client_config()
        .set("group.id", &spec.group_id)
        .set("enable.auto.commit", "false")
        .create()
        .with_context(|| format!("pipeline {}: cannot create a Kafka client for its group's offsets", spec.pipeline))
}

/// Every partition of the pipeline's inputs.
fn input_partitions(consumer: &BaseConsumer, spec: &ConsumerSpec) -> anyhow::Result<TopicPartitionList> {
    let mut all = TopicPartitionList::new();
    for topic in &spec.topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
            .with_context(|| format!("pipeline {}: cannot read metadata of topic {topic}", spec.pipeline))?;
        for t in metadata.topics() {
            for p in t.partitions() {
                all.add_partition(topic, p.id());
            }
        }
    }
    Ok(all)
}

/// The committed offset, high watermark and lag of every input partition of the pipeline's
/// consumer group, asked of the broker. Blocks for up to a few seconds: call it off the async
/// executor.
pub fn group_offsets(spec: &ConsumerSpec, kafka: &KafkaConfig) -> anyhow::Result<Vec<PartitionOffsets>> {
    let consumer = group_client(spec, kafka)?;
    let all = input_partitions(&consumer, spec)?;
    let committed = consumer.committed_offsets(all, REQUEST_TIMEOUT).with_context(|| {
        format!("pipeline {}: cannot read the committed offsets of group {}", spec.pipeline, spec.group_id)
    })?;
    let mut offsets = Vec::new();
    for element in committed.elements() {
        let (topic, partition) = (element.topic(), element.partition());
        let (low, high) = consumer.fetch_watermarks(topic, partition, REQUEST_TIMEOUT).with_context(|| {
            format!("pipeline {}: cannot read the watermarks of {topic}/{partition}", spec.pipeline)
        })?;
        let committed = match element.offset() {
            Offset::Offset(offset) => Some(offset),
            _ => None,
        };
        let lag = (high - committed.unwrap_or(low)).max(0);
        offsets.push(PartitionOffsets { topic: topic.to_owned(), partition, committed, high_watermark: high, lag });
    }
    Ok(offsets)
}

/// Commits new offsets for the pipeline's consumer group: each input partition's first
/// record (`earliest`), its end (`latest`), the first record at or after a time
/// (`timestamp`), or explicit offsets. The pipeline must be stopped: Kafka refuses commits
/// from outside a group that has members. Returns the offsets committed.
pub fn reset_offsets(
    spec: &ConsumerSpec,
    kafka: &KafkaConfig,
    to: &StartPosition,
) -> anyhow::Result<Vec<(String, i32, i64)>> {
    let consumer = group_client(spec, kafka)?;
    let all = input_partitions(&consumer, spec)?;
    let mut list = TopicPartitionList::new();
    let by_time = match to {
        StartPosition::Timestamp(ms) => Some(offsets_for_time(&consumer, &all, *ms)?),
        _ => None,
    };
    for e in all.elements() {
        let (topic, partition) = (e.topic(), e.partition());
        let (low, high) = consumer.fetch_watermarks(topic, partition, REQUEST_TIMEOUT).with_context(|| {
            format!("pipeline {}: cannot read the watermarks of {topic}/{partition}", spec.pipeline)
        })?;
        let offset = match to {
            StartPosition::Earliest => low,
            StartPosition::Latest => high,
            StartPosition::Timestamp(_) => {
                // No record at or after the time: the end of the partition.
                match by_time.as_ref().and_then(|l| l.find_partition(topic, partition)).map(|e| e.offset()) {
                    Some(Offset::Offset(offset)) => offset,
                    _ => high,
                }
            }
            StartPosition::Offsets(offsets) => {
                offsets.get(topic).and_then(|p| p.get(&partition)).copied().unwrap_or(low).clamp(low, high)
            }
        };
        list.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    }
    match consumer.commit(&list, CommitMode::Sync) {
        Ok(()) => {}
        // A broker that refuses a commit from outside a group it knows even when the group has
        // no member (librdkafka's mock cluster, which `sluice dev` runs, keeps every group it
        // has seen and asks every commit for a member id): commit as a member of the group.
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::UnknownMemberId)) => {
            commit_as_member(spec, kafka, &all, &list)?;
        }
        Err(error) => {
            return Err(anyhow::Error::new(error).context(format!(
                "pipeline {}: cannot commit offsets for group {} (is it still running somewhere?)",
                spec.pipeline, spec.group_id
            )));
        }
    }
    let committed = list
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(offset) => Some((e.topic().to_owned(), e.partition(), offset)),
            _ => None,
        })
        .collect();
    tracing::info!(pipeline = %spec.pipeline, ?to, "consumer group offsets reset");
    Ok(committed)
}

/// How long, beyond the group's session timeout, an offsets reset waits to be given every input
/// partition when it commits as a member of the pipeline's consumer group. A group its last
/// member just left (a paused pipeline's) rebalances for up to its session timeout before it
/// takes a new member in; a group's first join waits for the broker's initial rebalance delay
/// (3 s on librdkafka's mock cluster and on Kafka by default).
pub const RESET_JOIN_GRACE: Duration = Duration::from_secs(30);

/// Commits `offsets` for the pipeline's group from inside it: joins the group, waits to be
/// assigned every partition of `all` (which proves no other member is in it), commits, and
/// leaves. Used where a broker refuses commits from outside a group it knows. Refuses when the
/// group has another member, or when the assignment does not come within the group's session
/// timeout and [`RESET_JOIN_GRACE`].
fn commit_as_member(
    spec: &ConsumerSpec,
    kafka: &KafkaConfig,
    all: &TopicPartitionList,
    offsets: &TopicPartitionList,
) -> anyhow::Result<()> {
    let (pipeline, group) = (&spec.pipeline, &spec.group_id);
    // A real broker that refused the commit may say why: a group with members is running.
    let probe = group_client(spec, kafka)?;
    if let Ok(groups) = probe.fetch_group_list(Some(group), Duration::from_secs(2))
        && let Some(described) = groups.groups().iter().find(|g| g.name() == group.as_str())
        && !described.members().is_empty()
    {
        anyhow::bail!(
            "pipeline {pipeline}: cannot reset the offsets of group {group}: it has {} member(s) (is the \
             pipeline still running somewhere?)",
            described.members().len()
        );
    }
    drop(probe);
    let member: BaseConsumer = kafka
        .client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("session.timeout.ms", spec.group.session_timeout_ms.to_string())
        .set("heartbeat.interval.ms", spec.group.heartbeat_interval_ms.to_string())
        .create()
        .with_context(|| format!("pipeline {pipeline}: cannot create a Kafka client to join group {group}"))?;
    let topics: Vec<&str> = spec.topics.iter().map(String::as_str).collect();
    member.subscribe(&topics).with_context(|| format!("pipeline {pipeline}: cannot join group {group}"))?;
    let wanted = all.elements().len();
    let wait = Duration::from_millis(spec.group.session_timeout_ms) + RESET_JOIN_GRACE;
    let deadline = std::time::Instant::now() + wait;
    let mut assigned = 0;
    while std::time::Instant::now() < deadline {
        // Records fetched meanwhile are dropped: only the explicit offsets are committed.
        let _ = member.poll(Duration::from_millis(100));
        assigned = member.assignment().map(|a| a.elements().len()).unwrap_or(0);
        if assigned == wanted {
            break;
        }
    }
    let result = if assigned == wanted {
        member
            .commit(offsets, CommitMode::Sync)
            .with_context(|| format!("pipeline {pipeline}: cannot commit offsets for group {group} as a member of it"))
    } else {
        Err(anyhow::anyhow!(
            "pipeline {pipeline}: cannot reset the offsets of group {group}: joined it to commit, but was given \
             {assigned} of its {wanted} input partitions within {wait:?} (is the pipeline still \
             running somewhere?)"
        ))
    };
    member.unsubscribe();
    result
}

/// Those of `topics` (a pipeline's, named for errors) that the cluster does not have, sorted.
pub fn missing_topics(pipeline: &str, topics: &[String], kafka: &KafkaConfig) -> anyhow::Result<Vec<String>> {
    let consumer: BaseConsumer = kafka.client_config().set("allow.auto.create.topics", "false").create()?;
    let metadata = consumer
        .fetch_metadata(None, REQUEST_TIMEOUT)
        .with_context(|| format!("pipeline {pipeline}: cannot read the cluster's metadata from {}", kafka.brokers))?;
    let existing: std::collections::HashSet<&str> =
        metadata.topics().iter().filter(|t| t.error().is_none()).map(|t| t.name()).collect();
    let mut missing: Vec<String> = topics.iter().filter(|t| !existing.contains(t.as_str())).cloned().collect();
    missing.sort();
    missing.dedup();
    Ok(missing)
}

/// The offset of the first record at or after `ms` in each of `partitions`.
fn offsets_for_time(
    consumer: &BaseConsumer,
    partitions: &TopicPartitionList,
    ms: i64,
) -> anyhow::Result<TopicPartitionList> {
    let mut query = TopicPartitionList::new();
    for e in partitions.elements() {
        query.add_partition_offset(e.topic(), e.partition(), Offset::Offset(ms))?;
    }
    Ok(consumer.offsets_for_times(query, REQUEST_TIMEOUT)?)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};

    use super::*;

    const PARTITIONS: i32 = 2;
    const WAIT: Duration = Duration::from_secs(30);

    fn spec(topic: &str) -> ConsumerSpec {
        ConsumerSpec {
            pipeline: "p".into(),
            group_id: "sluice.p".into(),
            topics: vec![topic.into()],
            start: StartPosition::Earliest,
            group: GroupSettings::default(),
        }
    }

    /// A member of the group joins, commits offset 1 on every partition, and leaves, as a
    /// pipeline that ran and was paused does.
    fn run_and_leave_the_group(spec: &ConsumerSpec, kafka: &KafkaConfig) {
        let member: BaseConsumer = kafka
            .client_config()
            .set("group.id", &spec.group_id)
            .set("session.timeout.ms", spec.group.session_timeout_ms.to_string())
            .create()
            .unwrap();
        member.subscribe(&[spec.topics[0].as_str()]).unwrap();
        let deadline = Instant::now() + WAIT;
        while member.assignment().unwrap().count() < PARTITIONS as usize {
            assert!(Instant::now() < deadline, "the member was never given its partitions");
            let _ = member.poll(Duration::from_millis(100));
        }
        let mut list = TopicPartitionList::new();
        for partition in 0..PARTITIONS {
            list.add_partition_offset(&spec.topics[0], partition, Offset::Offset(1)).unwrap();
        }
        member.commit(&list, CommitMode::Sync).unwrap();
        member.unsubscribe();
    }

    #[test]
    fn offsets_of_a_group_with_no_member_are_reset_on_the_mock_cluster_that_refuses_outside_commits() {
        let cluster = MockCluster::new(1).unwrap();
        let topic = "input";
        cluster.create_topic(topic, PARTITIONS, 1).unwrap();
        let kafka = KafkaConfig::new(cluster.bootstrap_servers());
        let producer: BaseProducer = kafka.client_config().create().unwrap();
        for partition in 0..PARTITIONS {
            for _ in 0..3 {
                producer.send(BaseRecord::<(), str>::to(topic).partition(partition).payload("x")).unwrap();
            }
        }
        producer.flush(WAIT).unwrap();
        let spec = spec(topic);
        run_and_leave_the_group(&spec, &kafka);

        // The mock cluster refuses the commit a reset makes from outside the group.
        let outsider = group_client(&spec, &kafka).unwrap();
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(topic, 0, Offset::Offset(0)).unwrap();
        assert!(
            matches!(
                outsider.commit(&list, CommitMode::Sync),
                Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::UnknownMemberId))
            ),
            "the mock cluster now accepts outside commits: the member path may be unneeded"
        );

        let reset = reset_offsets(&spec, &kafka, &StartPosition::Latest).expect("the reset succeeds");
        assert_eq!(reset, vec![(topic.to_string(), 0, 3), (topic.to_string(), 1, 3)]);
        let committed: Vec<Option<i64>> =
            group_offsets(&spec, &kafka).unwrap().into_iter().map(|p| p.committed).collect();
        assert_eq!(committed, vec![Some(3), Some(3)], "the group resumes from the reset offsets");
    }
}
