//! The nodes' heartbeats in the status topic, and the cluster's membership as they show it.
//!
//! Every node publishes a [`Heartbeat`] every [`ClusterConfig::heartbeat_interval`] to the
//! status topic, keyed by its node id, and follows the topic from its start, keeping each
//! node's latest heartbeat ([`Membership`]). A node is `up` while its heartbeats come, `gone`
//! when none came for [`ClusterConfig::node_gone_after`], and `left` after a clean shutdown
//! published its last heartbeat with `left: true` ([`Membership::leave`]). Ages are measured
//! with this node's monotonic clock from the moment a heartbeat was read, so clocks that
//! disagree between nodes do not matter; only heartbeats read from the history of the topic
//! at start-up are aged by their `sent_at` against this node's wall clock, until the next one
//! comes.
//!
//! This module owns the heartbeats and the view of the membership; it must not act on them
//! (nothing here moves a pipeline or a partition).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::{ClusterConfig, Counters};
use crate::PipelineStatus;
use crate::manager::{PipelineState, PipelineSummary};
use sluice_kafka::KafkaConfig;
use sluice_kafka::log::{Cleanup, LogAppender, LogReader, ensure_log_topic};

/// How long the follower of the status topic waits for a record before looking again (and
/// checking whether a node went quiet).
const FOLLOW_POLL: Duration = Duration::from_millis(100);
/// How long [`Membership::leave`] waits for its last heartbeat to reach the broker.
pub const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);

/// One node's heartbeat: who it is and what it runs, as it published it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Heartbeat {
    /// The node's id.
    pub node: String,
    /// The node's admin API URL, when it knows it.
    #[serde(default)]
    pub admin_url: Option<String>,
    /// When the node sent it, in milliseconds since the Unix epoch (its own clock).
    pub sent_at: u64,
    /// `true` on the last heartbeat of a node that shut down cleanly.
    #[serde(default)]
    pub left: bool,
    /// Its pipelines, by name.
    #[serde(default)]
    pub pipelines: Vec<NodePipeline>,
}

/// One pipeline as one node runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodePipeline {
    /// The pipeline.
    pub name: String,
    /// The revision the node runs.
    pub revision: u64,
    /// The module digest the node runs.
    pub module: String,
    /// Its state on the node: `running`, `paused`, `failed`, `stalled` or `stopping`.
    pub state: String,
    /// The input partitions the node owns now.
    pub partitions: Vec<OwnedPartition>,
    /// Records consumed on the node since it started.
    pub records_in: u64,
    /// Outputs produced on the node since it started.
    pub records_out: u64,
    /// Records that failed for good on the node since it started.
    pub failed: u64,
    /// Records behind the high watermark, summed over the partitions the node works on.
    pub lag: i64,
    /// The node's latest failure of the pipeline, with its partition and offset.
    pub last_error: Option<String>,
}

/// An input partition a node owns.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OwnedPartition {
    /// The input topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The pipeline revision of the module its last batch ran; `None` before its first batch
    /// on this node (its first batch runs the node's current revision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
}

impl std::fmt::Display for OwnedPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

impl NodePipeline {
    /// The pipeline as this node runs it, from its summary and status
    /// ([`crate::manager::PipelineManager::statuses`]).
    pub fn new(summary: &PipelineSummary, status: &PipelineStatus) -> NodePipeline {
        let mut partitions: Vec<OwnedPartition> = status
            .partitions
            .iter()
            .filter(|p| p.owned)
            .map(|p| OwnedPartition { topic: p.topic.clone(), partition: p.partition, revision: p.revision })
            .collect();
        partitions.sort();
        NodePipeline {
            name: summary.name.clone(),
            revision: summary.revision,
            module: summary.module.clone(),
            state: state_name(summary.state).to_string(),
            partitions,
            records_in: summary.records_in,
            records_out: summary.records_out,
            failed: summary.failed,
            lag: summary.lag,
            last_error: status.last_error.clone(),
        }
    }
}

impl From<&(PipelineSummary, PipelineStatus)> for NodePipeline {
    fn from((summary, status): &(PipelineSummary, PipelineStatus)) -> NodePipeline {
        NodePipeline::new(summary, status)
    }
}

/// A pipeline state's name, as the API writes it.
fn state_name(state: PipelineState) -> &'static str {
    match state {
        PipelineState::Running => "running",
        PipelineState::Paused => "paused",
        PipelineState::Failed => "failed",
        PipelineState::Stalled => "stalled",
        PipelineState::Stopping => "stopping",
    }
}

/// A node's membership as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum NodeState {
    /// Its heartbeats come.
    Up,
    /// No heartbeat came for [`ClusterConfig::node_gone_after`].
    Gone,
    /// It shut down cleanly: its last heartbeat said so.
    Left,
}

impl NodeState {
    /// The state's name, as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Up => "up",
            NodeState::Gone => "gone",
            NodeState::Left => "left",
        }
    }

    /// The state of a node whose last heartbeat is `last`, read `age` ago.
    pub fn of(last: &Heartbeat, age: Duration, gone_after: Duration) -> NodeState {
        if last.left {
            NodeState::Left
        } else if age >= gone_after {
            NodeState::Gone
        } else {
            NodeState::Up
        }
    }
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One node of the cluster: its state, and its last heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeStatus {
    /// The node's id.
    pub node: String,
    /// `up`, `gone` or `left`.
    pub state: NodeState,
    /// Whole seconds since its last heartbeat was read.
    pub last_seen_secs: u64,
    /// Its last heartbeat.
    pub heartbeat: Heartbeat,
}

impl NodeStatus {
    /// This node as it is now, outside a cluster: `up`, seen now, running `pipelines`.
    pub fn local(node: &str, pipelines: Vec<NodePipeline>) -> NodeStatus {
        NodeStatus {
            node: node.to_string(),
            state: NodeState::Up,
            last_seen_secs: 0,
            heartbeat: Heartbeat { node: node.to_string(), admin_url: None, sent_at: now_ms(), left: false, pipelines },
        }
    }
}

/// One node's share of one pipeline, for the pipeline's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeShare {
    /// The node's id.
    pub node: String,
    /// The node's state.
    pub state: NodeState,
    /// The revision the node runs.
    pub revision: u64,
    /// The module digest the node runs.
    pub module: String,
    /// The pipeline's state on the node.
    pub pipeline_state: String,
    /// The input partitions the node owns.
    pub partitions: Vec<OwnedPartition>,
    /// Records the node consumed since it started.
    pub records_in: u64,
    /// Records behind the high watermark on the node's partitions.
    pub lag: i64,
}

/// Every node's share of pipeline `name`, in the order of `nodes`: the nodes whose last
/// heartbeat names it.
pub fn shares(nodes: &[NodeStatus], name: &str) -> Vec<NodeShare> {
    nodes
        .iter()
        .filter_map(|n| {
            let p = n.heartbeat.pipelines.iter().find(|p| p.name == name)?;
            Some(NodeShare {
                node: n.node.clone(),
                state: n.state,
                revision: p.revision,
                module: p.module.clone(),
                pipeline_state: p.state.clone(),
                // A node gone or left owns nothing now, whatever its last heartbeat said.
                partitions: if n.state == NodeState::Up { p.partitions.clone() } else { Vec::new() },
                records_in: p.records_in,
                lag: p.lag,
            })
        })
        .collect()
}

/// How far a pipeline's current revision has reached across the cluster, from the nodes'
/// heartbeats: a reload (or rollback) is complete when every node that is up runs the revision
/// and every partition they own has switched to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Rollout {
    /// The pipeline's current revision.
    pub revision: u64,
    /// The nodes up that run it, of those up that have the pipeline.
    pub nodes_on_revision: usize,
    /// The nodes up that have the pipeline.
    pub nodes: usize,
    /// The partitions owned by nodes up whose last batch ran the revision (or that have not
    /// processed a batch yet, so their first runs it).
    pub partitions_switched: usize,
    /// The partitions owned by nodes up.
    pub partitions: usize,
    /// Every node up runs the revision and every partition they own switched.
    pub complete: bool,
}

impl Rollout {
    /// The rollout of `revision` as `shares` show it.
    pub fn of(revision: u64, shares: &[NodeShare]) -> Rollout {
        let up: Vec<&NodeShare> = shares.iter().filter(|s| s.state == NodeState::Up).collect();
        let nodes_on_revision = up.iter().filter(|s| s.revision == revision).count();
        let owned: Vec<&OwnedPartition> = up.iter().flat_map(|s| s.partitions.iter()).collect();
        let partitions_switched = owned.iter().filter(|p| p.revision.is_none_or(|r| r == revision)).count();
        Rollout {
            revision,
            nodes_on_revision,
            nodes: up.len(),
            partitions_switched,
            partitions: owned.len(),
            complete: !up.is_empty() && nodes_on_revision == up.len() && partitions_switched == owned.len(),
        }
    }
}

/// Milliseconds since the Unix epoch, by this node's clock.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A node's latest heartbeat, and when it was read.
#[derive(Debug, Clone)]
struct Seen {
    heartbeat: Heartbeat,
    /// When it was read, by this node's monotonic clock.
    read_at: Instant,
    /// Its age when it was read: 0 for one read as it came, its age by `sent_at` for one read
    /// from the topic's history at start-up.
    age_when_read: Duration,
    /// Whether this node has logged it as gone (and not yet as back).
    reported_gone: bool,
}

impl Seen {
    fn age(&self, now: Instant) -> Duration {
        self.age_when_read + now.saturating_duration_since(self.read_at)
    }

    fn state(&self, now: Instant, gone_after: Duration) -> NodeState {
        NodeState::of(&self.heartbeat, self.age(now), gone_after)
    }
}

/// A change of a node's state worth a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// The node's heartbeats stopped for the gone time.
    Gone {
        /// The node.
        node: String,
        /// How long since its last heartbeat.
        silent: Duration,
    },
    /// A node logged as gone publishes again.
    Back {
        /// The node.
        node: String,
    },
}

/// The latest heartbeat of every node, and their states: the pure part of [`Membership`].
#[derive(Debug, Clone)]
pub struct Roster {
    gone_after: Duration,
    nodes: BTreeMap<String, Seen>,
}

impl Roster {
    /// An empty roster whose nodes are gone after `gone_after` without a heartbeat.
    pub fn new(gone_after: Duration) -> Roster {
        Roster { gone_after, nodes: BTreeMap::new() }
    }

    /// Takes in `heartbeat`, read at `now`, `age_when_read` old (0 for one read as it came).
    /// Answers [`Transition::Back`] when its node was logged as gone.
    pub fn receive(&mut self, heartbeat: Heartbeat, now: Instant, age_when_read: Duration) -> Option<Transition> {
        let node = heartbeat.node.clone();
        let was_gone = self.nodes.get(&node).is_some_and(|s| s.reported_gone);
        let mut seen = Seen { heartbeat, read_at: now, age_when_read, reported_gone: false };
        // A heartbeat read already past the gone time (history of a node long gone) is not
        // news: it is not logged as going.
        seen.reported_gone = NodeState::of(&seen.heartbeat, seen.age(now), self.gone_after) == NodeState::Gone;
        self.nodes.insert(node.clone(), seen);
        let state = self.nodes[&node].state(now, self.gone_after);
        (was_gone && state == NodeState::Up).then_some(Transition::Back { node })
    }

    /// The nodes that became gone since the last sweep, each once.
    pub fn sweep(&mut self, now: Instant) -> Vec<Transition> {
        let gone_after = self.gone_after;
        self.nodes
            .iter_mut()
            .filter(|(_, seen)| !seen.reported_gone && seen.state(now, gone_after) == NodeState::Gone)
            .map(|(node, seen)| {
                seen.reported_gone = true;
                Transition::Gone { node: node.clone(), silent: seen.age(now) }
            })
            .collect()
    }

    /// Every node at `now`, sorted by node id.
    pub fn nodes(&self, now: Instant) -> Vec<NodeStatus> {
        self.nodes
            .iter()
            .map(|(node, seen)| NodeStatus {
                node: node.clone(),
                state: seen.state(now, self.gone_after),
                last_seen_secs: seen.age(now).as_secs(),
                heartbeat: seen.heartbeat.clone(),
            })
            .collect()
    }
}

/// What a node runs, asked each time it publishes a heartbeat.
pub type Snapshot = Arc<dyn Fn() -> BoxFuture<'static, Vec<NodePipeline>> + Send + Sync>;

/// A node's part in the cluster's membership: it publishes this node's heartbeats and follows
/// everyone's. Dropping it stops both without a last heartbeat; [`Membership::leave`] publishes
/// one saying the node left.
pub struct Membership {
    shared: Arc<Shared>,
    publisher: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The follower's thread, joined when the node leaves.
    follower: Mutex<Option<std::thread::JoinHandle<()>>>,
}

struct Shared {
    node: String,
    topic: String,
    admin_url: Option<String>,
    appender: LogAppender,
    snapshot: Snapshot,
    roster: Mutex<Roster>,
    /// Set to end the follower.
    stop: AtomicBool,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership").field("node", &self.shared.node).field("topic", &self.shared.topic).finish()
    }
}

impl Membership {
    /// Starts node `node`'s membership: makes sure the status topic exists, follows it from
    /// its start on a thread of its own, and publishes a heartbeat at once and then every
    /// heartbeat interval, with what `snapshot` answers. Must be called in a tokio runtime.
    pub async fn start(
        kafka: &KafkaConfig,
        config: &ClusterConfig,
        node: &str,
        appender: LogAppender,
        snapshot: Snapshot,
        admin_url: Option<String>,
        counters: Arc<Counters>,
    ) -> anyhow::Result<Membership> {
        config.validate().map_err(anyhow::Error::msg)?;
        let topic = config.status_topic.clone();
        ensure_log_topic(kafka, &topic, Cleanup::Compact).await?;
        let (reader, history_end) = {
            let (kafka, topic) = (kafka.clone(), topic.clone());
            tokio::task::spawn_blocking(move || -> anyhow::Result<(LogReader, i64)> {
                let reader = LogReader::open(&kafka, &topic, 0)?;
                let end = reader.end().with_context(|| format!("cannot read the end of the status topic {topic}"))?;
                Ok((reader, end))
            })
            .await
            .context("the status reader's task failed")??
        };
        let shared = Arc::new(Shared {
            node: node.to_string(),
            topic,
            admin_url,
            appender,
            snapshot,
            roster: Mutex::new(Roster::new(config.node_gone_after())),
            stop: AtomicBool::new(false),
            counters,
        });
        let follower = Arc::downgrade(&shared);
        let thread = std::thread::Builder::new()
            .name("sluice-status".into())
            .spawn(move || follow(follower, reader, history_end))
            .context("cannot start the status follower")?;
        let publisher = tokio::spawn(publish(shared.clone(), config.heartbeat_interval()));
        tracing::info!(node, topic = %shared.topic, "publishing heartbeats every {:?}", config.heartbeat_interval());
        Ok(Membership { shared, publisher: Mutex::new(Some(publisher)), follower: Mutex::new(Some(thread)) })
    }

    /// Every node seen in the status topic, this one included once its first heartbeat is
    /// read back, sorted by node id.
    pub fn nodes(&self) -> Vec<NodeStatus> {
        self.shared.roster().nodes(Instant::now())
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.shared.node
    }

    /// Stops publishing heartbeats, without a last one: the others see this node as gone after
    /// the gone time, as if it had crashed. Following goes on.
    pub fn stop_publishing(&self) {
        if let Some(task) = self.publisher.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }

    /// Publishes this node's last heartbeat, saying it left, and stops publishing and
    /// following. Called on a clean shutdown; waits at most [`LEAVE_TIMEOUT`].
    pub async fn leave(&self) {
        self.stop_publishing();
        // Building the heartbeat reads the pipelines' status, which may wait on an unreachable
        // broker too: the bound covers it as well as the send.
        let last = async {
            let mut heartbeat = self.shared.heartbeat().await;
            heartbeat.left = true;
            self.shared.send(&heartbeat).await
        };
        match tokio::time::timeout(LEAVE_TIMEOUT, last).await {
            Ok(Ok(_)) => tracing::info!(node = %self.shared.node, "left the cluster"),
            Ok(Err(e)) => tracing::warn!(node = %self.shared.node, "cannot publish the last heartbeat: {e}"),
            Err(_) => tracing::warn!(
                node = %self.shared.node,
                "the last heartbeat was not acknowledged within {LEAVE_TIMEOUT:?} (LEAVE_TIMEOUT)"
            ),
        }
        self.shared.stop.store(true, Ordering::SeqCst);
        let thread = self.follower.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.stop_publishing();
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

impl Shared {
    fn roster(&self) -> std::sync::MutexGuard<'_, Roster> {
        self.roster.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn heartbeat(&self) -> Heartbeat {
        Heartbeat {
            node: self.node.clone(),
            admin_url: self.admin_url.clone(),
            sent_at: now_ms(),
            left: false,
            pipelines: (self.snapshot)().await,
        }
    }

    async fn send(&self, heartbeat: &Heartbeat) -> anyhow::Result<i64> {
        let value = serde_json::to_vec(heartbeat).expect("a heartbeat serialises");
        self.appender
            .append(&self.topic, self.node.as_bytes(), Some(&value))
            .await
            .with_context(|| format!("cannot append to the status topic {}", self.topic))
    }
}

/// Publishes `shared`'s heartbeat every `interval` until aborted; a failure is logged once,
/// and once when publishing works again.
async fn publish(shared: Arc<Shared>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticks.tick().await;
        let heartbeat = shared.heartbeat().await;
        match shared.send(&heartbeat).await {
            Ok(_) if failing => {
                tracing::info!(node = %shared.node, topic = %shared.topic, "publishing heartbeats again");
                failing = false;
            }
            Ok(_) => {}
            Err(e) if !failing => {
                shared.counters.heartbeat_outage();
                tracing::warn!(node = %shared.node, "cannot publish a heartbeat: {e:#}; retrying every {interval:?}");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

/// Follows the status topic until the membership is dropped or left, keeping every node's
/// latest heartbeat and logging nodes that go quiet and come back. Records before
/// `history_end` are the topic's history, aged by their `sent_at`.
fn follow(shared: Weak<Shared>, reader: LogReader, history_end: i64) {
    let mut failing = false;
    loop {
        let Some(shared) = shared.upgrade() else { return };
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        match reader.poll(FOLLOW_POLL) {
            Ok(Some(record)) => {
                if failing {
                    tracing::info!(topic = %reader.topic(), "reading the status topic again");
                    failing = false;
                }
                receive(&shared, &record, history_end);
            }
            Ok(None) => {}
            Err(e) => {
                if !failing {
                    shared.counters.read_outage();
                    tracing::warn!(topic = %reader.topic(), "cannot read the status topic: {e}; retrying");
                    failing = true;
                }
                std::thread::sleep(FOLLOW_POLL);
            }
        }
        for transition in shared.roster().sweep(Instant::now()) {
            log(&transition);
        }
    }
}

/// Takes in one record of the status topic.
fn receive(shared: &Shared, record: &sluice_kafka::log::LogRecord, history_end: i64) {
    // A tombstone removes nothing: nodes are shown until their key is compacted away.
    let Some(value) = &record.value else { return };
    let heartbeat: Heartbeat = match serde_json::from_slice(value) {
        Ok(heartbeat) => heartbeat,
        Err(e) => {
            shared.counters.skipped_heartbeat();
            tracing::error!(
                topic = %shared.topic,
                offset = record.offset,
                "skipping a heartbeat that cannot be read at offset {}: {e}",
                record.offset
            );
            return;
        }
    };
    let age = if record.offset < history_end {
        Duration::from_millis(now_ms().saturating_sub(heartbeat.sent_at))
    } else {
        Duration::ZERO
    };
    if let Some(transition) = shared.roster().receive(heartbeat, Instant::now(), age) {
        log(&transition);
    }
}

fn log(transition: &Transition) {
    match transition {
        Transition::Gone { node, silent } => {
            tracing::warn!(%node, "node {node} is gone: no heartbeat for {:.1} s", silent.as_secs_f64())
        }
        Transition::Back { node } => tracing::info!(%node, "node {node} is back: its heartbeats come again"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GONE_AFTER: Duration = Duration::from_secs(10);

    fn heartbeat(node: &str, left: bool) -> Heartbeat {
        Heartbeat { node: node.into(), admin_url: None, sent_at: 1, left, pipelines: Vec::new() }
    }

    fn states(roster: &Roster, now: Instant) -> Vec<(String, NodeState)> {
        roster.nodes(now).into_iter().map(|n| (n.node, n.state)).collect()
    }

    #[test]
    fn a_node_is_up_until_it_is_silent_for_the_gone_time() {
        let last = heartbeat("a", false);
        assert_eq!(NodeState::of(&last, Duration::ZERO, GONE_AFTER), NodeState::Up);
        assert_eq!(NodeState::of(&last, GONE_AFTER - Duration::from_millis(1), GONE_AFTER), NodeState::Up);
        assert_eq!(NodeState::of(&last, GONE_AFTER, GONE_AFTER), NodeState::Gone);
    }

    #[test]
    fn a_node_whose_last_heartbeat_says_it_left_is_left_however_old() {
        let last = heartbeat("a", true);
        assert_eq!(NodeState::of(&last, Duration::ZERO, GONE_AFTER), NodeState::Left);
        assert_eq!(NodeState::of(&last, GONE_AFTER * 100, GONE_AFTER), NodeState::Left);
    }

    #[test]
    fn nodes_are_sorted_by_id_with_their_state_and_age() {
        let start = Instant::now();
        let mut roster = Roster::new(GONE_AFTER);
        roster.receive(heartbeat("c", false), start, Duration::ZERO);
        roster.receive(heartbeat("a", false), start, Duration::ZERO);
        roster.receive(heartbeat("b", true), start, Duration::ZERO);
        let later = start + Duration::from_secs(3);
        let nodes = roster.nodes(later);
        assert_eq!(
            nodes.iter().map(|n| (n.node.as_str(), n.state, n.last_seen_secs)).collect::<Vec<_>>(),
            [("a", NodeState::Up, 3), ("b", NodeState::Left, 3), ("c", NodeState::Up, 3)]
        );
    }

    #[test]
    fn a_silent_node_is_reported_gone_once_and_back_once() {
        let start = Instant::now();
        let mut roster = Roster::new(GONE_AFTER);
        roster.receive(heartbeat("a", false), start, Duration::ZERO);
        roster.receive(heartbeat("b", false), start, Duration::ZERO);
        assert!(roster.sweep(start + GONE_AFTER / 2).is_empty());
        // b keeps publishing, a does not.
        roster.receive(heartbeat("b", false), start + GONE_AFTER / 2, Duration::ZERO);
        let gone_at = start + GONE_AFTER;
        assert_eq!(roster.sweep(gone_at), [Transition::Gone { node: "a".into(), silent: GONE_AFTER }]);
        assert!(roster.sweep(gone_at + Duration::from_secs(1)).is_empty(), "reported once");
        assert_eq!(states(&roster, gone_at), [("a".to_string(), NodeState::Gone), ("b".to_string(), NodeState::Up)]);
        let back = roster.receive(heartbeat("a", false), gone_at + Duration::from_secs(2), Duration::ZERO);
        assert_eq!(back, Some(Transition::Back { node: "a".into() }));
        let again = roster.receive(heartbeat("a", false), gone_at + Duration::from_secs(3), Duration::ZERO);
        assert_eq!(again, None, "back is reported once");
    }

    #[test]
    fn a_node_that_left_is_never_reported_gone() {
        let start = Instant::now();
        let mut roster = Roster::new(GONE_AFTER);
        roster.receive(heartbeat("a", true), start, Duration::ZERO);
        assert!(roster.sweep(start + GONE_AFTER * 3).is_empty());
        assert_eq!(states(&roster, start + GONE_AFTER * 3), [("a".to_string(), NodeState::Left)]);
    }

    #[test]
    fn an_old_heartbeat_from_the_history_shows_gone_without_being_reported() {
        let start = Instant::now();
        let mut roster = Roster::new(GONE_AFTER);
        roster.receive(heartbeat("old", false), start, GONE_AFTER * 6);
        roster.receive(heartbeat("recent", false), start, Duration::from_secs(1));
        assert_eq!(
            states(&roster, start),
            [("old".to_string(), NodeState::Gone), ("recent".to_string(), NodeState::Up)]
        );
        assert!(roster.sweep(start).is_empty(), "a node gone before this one started is not news");
        let recent_gone = start + GONE_AFTER - Duration::from_secs(1);
        assert_eq!(
            roster.sweep(recent_gone),
            [Transition::Gone { node: "recent".into(), silent: GONE_AFTER }],
            "aged from its sent time"
        );
    }

    #[test]
    fn a_node_share_is_taken_from_the_heartbeats_that_name_the_pipeline() {
        let pipeline = |name: &str, partitions: &[i32]| NodePipeline {
            name: name.into(),
            revision: 3,
            module: "sha256:ab".into(),
            state: "running".into(),
            partitions: partitions
                .iter()
                .map(|&p| OwnedPartition { topic: "clicks".into(), partition: p, revision: None })
                .collect(),
            records_in: 10,
            records_out: 5,
            failed: 0,
            lag: 7,
            last_error: None,
        };
        let node = |id: &str, state, pipelines| NodeStatus {
            node: id.into(),
            state,
            last_seen_secs: 0,
            heartbeat: Heartbeat { node: id.into(), admin_url: None, sent_at: 1, left: false, pipelines },
        };
        let nodes = [
            node("a", NodeState::Up, vec![pipeline("p", &[0, 3]), pipeline("q", &[1])]),
            node("b", NodeState::Gone, vec![pipeline("q", &[0]), pipeline("p", &[4])]),
            node("c", NodeState::Up, vec![pipeline("p", &[1, 2])]),
            node("d", NodeState::Up, vec![pipeline("q", &[4])]),
        ];
        let shares = shares(&nodes, "p");
        assert_eq!(
            shares.iter().map(|s| (s.node.as_str(), s.state)).collect::<Vec<_>>(),
            [("a", NodeState::Up), ("b", NodeState::Gone), ("c", NodeState::Up)]
        );
        assert_eq!(shares[0].partitions.iter().map(ToString::to_string).collect::<Vec<_>>(), ["clicks/0", "clicks/3"]);
        assert!(shares[1].partitions.is_empty(), "a node gone owns nothing, whatever its last heartbeat said");
        assert_eq!((shares[2].revision, shares[2].records_in, shares[2].lag), (3, 10, 7));
    }

    #[test]
    fn a_heartbeat_reads_back_as_it_was_written_and_tolerates_missing_optional_fields() {
        let sent = Heartbeat {
            node: "n1".into(),
            admin_url: Some("http://127.0.0.1:7070".into()),
            sent_at: 1_700_000_000_000,
            left: false,
            pipelines: Vec::new(),
        };
        let read: Heartbeat = serde_json::from_slice(&serde_json::to_vec(&sent).unwrap()).unwrap();
        assert_eq!(read, sent);
        let minimal: Heartbeat = serde_json::from_str(r#"{"node": "n2", "sent_at": 5}"#).unwrap();
        assert_eq!((minimal.left, minimal.admin_url, minimal.pipelines.len()), (false, None, 0));
    }
}

#[cfg(test)]
mod rollout_tests {
    use super::*;

    fn share(node: &str, state: NodeState, revision: u64, partitions: &[(i32, Option<u64>)]) -> NodeShare {
        NodeShare {
            node: node.into(),
            state,
            revision,
            module: String::new(),
            pipeline_state: "running".into(),
            partitions: partitions
                .iter()
                .map(|&(partition, revision)| OwnedPartition { topic: "clicks".into(), partition, revision })
                .collect(),
            records_in: 0,
            lag: 0,
        }
    }

    #[test]
    fn a_reload_is_complete_once_every_node_up_runs_it_and_every_owned_partition_switched() {
        let halfway = [
            share("a", NodeState::Up, 3, &[(0, Some(3)), (1, Some(2))]),
            share("b", NodeState::Up, 3, &[(2, None)]),
            share("c", NodeState::Gone, 2, &[(3, Some(2))]),
        ];
        let rollout = Rollout::of(3, &halfway);
        assert_eq!((rollout.nodes_on_revision, rollout.nodes), (2, 2), "a node gone does not count");
        assert_eq!((rollout.partitions_switched, rollout.partitions), (2, 3));
        assert!(!rollout.complete, "partition 1 still runs revision 2");
        let done =
            [share("a", NodeState::Up, 3, &[(0, Some(3)), (1, Some(3))]), share("b", NodeState::Up, 3, &[(2, None)])];
        assert!(Rollout::of(3, &done).complete);
        let lagging_node = [share("a", NodeState::Up, 3, &[(0, Some(3))]), share("b", NodeState::Up, 2, &[])];
        assert!(!Rollout::of(3, &lagging_node).complete, "node b has not applied revision 3");
    }
}
