//! The cluster's membership on a real broker (tansu): nodes that publish heartbeats to the
//! status topic show as `up` to each other, a node whose heartbeats stop shows as `gone` after
//! the gone time, and a node that leaves cleanly shows as `left`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::kafka::KafkaConfig;
use sluice::kafka::log::{LOG_APPEND_TIMEOUT, LogAppender};
use sluice::pipeline::cluster::ClusterConfig;
use sluice::pipeline::cluster::status::{
    LEAVE_TIMEOUT, Membership, NodePipeline, NodeState, NodeStatus, OwnedPartition, Snapshot,
};
use sluice_tests::kafka::{TansuBroker, unique_suffix};

/// How long a test waits for a state before it fails.
const WAIT: Duration = Duration::from_secs(60);

/// What node `node` says it runs: pipeline `clicks` on one partition of its own.
fn snapshot(partition: i32) -> Snapshot {
    Arc::new(move || {
        Box::pin(async move {
            vec![NodePipeline {
                name: "clicks".into(),
                revision: 2,
                module: "sha256:00".into(),
                state: "running".into(),
                partitions: vec![OwnedPartition { topic: "clicks".into(), partition, revision: None }],
                records_in: 100,
                records_out: 50,
                failed: 0,
                lag: 3,
                last_error: None,
            }]
        })
    })
}

async fn join(kafka: &KafkaConfig, config: &ClusterConfig, node: &str, partition: i32) -> Membership {
    let appender = LogAppender::new(kafka, &format!("sluice-{node}-status")).expect("an appender");
    let url = Some(format!("http://127.0.0.1:{}", 7000 + partition));
    Membership::start(kafka, config, node, appender, snapshot(partition), url, Default::default())
        .await
        .expect("the membership starts")
}

/// Waits until `membership` sees the nodes in `states`, by node id; fails after [`WAIT`]
/// showing what it saw.
async fn wait_for_states(membership: &Membership, states: &[(&str, NodeState)]) -> Vec<NodeStatus> {
    let deadline = Instant::now() + WAIT;
    loop {
        let nodes = membership.nodes();
        let seen: Vec<(&str, NodeState)> = nodes.iter().map(|n| (n.node.as_str(), n.state)).collect();
        if seen == states {
            return nodes;
        }
        assert!(Instant::now() < deadline, "{} sees {seen:?}, not {states:?}, after {WAIT:?}", membership.node());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_are_up_while_they_publish_gone_when_they_stop_and_left_after_leaving() {
    let broker = TansuBroker::start();
    let kafka = KafkaConfig::new(broker.bootstrap());
    let config = ClusterConfig {
        status_topic: format!("_sluice_status-{}", unique_suffix()),
        heartbeat_interval_ms: 200,
        node_gone_after_ms: 2_000,
        ..ClusterConfig::default()
    };
    // A record that is no heartbeat is skipped, not taken for a node.
    let junk = LogAppender::new(&kafka, "sluice-junk").unwrap();
    sluice::kafka::log::ensure_log_topic(&kafka, &config.status_topic, sluice::kafka::log::Cleanup::Compact)
        .await
        .unwrap();
    junk.append(&config.status_topic, b"junk", Some(b"not a heartbeat")).await.expect("appended");
    let a = join(&kafka, &config, "node-a", 0).await;
    let b = join(&kafka, &config, "node-b", 1).await;
    let c = join(&kafka, &config, "node-c", 2).await;

    use NodeState::{Gone, Left, Up};
    let nodes = wait_for_states(&a, &[("node-a", Up), ("node-b", Up), ("node-c", Up)]).await;
    wait_for_states(&c, &[("node-a", Up), ("node-b", Up), ("node-c", Up)]).await;
    let seen_c = &nodes[2].heartbeat;
    assert_eq!(seen_c.admin_url.as_deref(), Some("http://127.0.0.1:7002"));
    assert_eq!(
        seen_c.pipelines[0].partitions,
        [OwnedPartition { topic: "clicks".into(), partition: 2, revision: None }]
    );
    assert!(!seen_c.left);

    // node-c stops publishing, as if it had crashed: the others see it gone.
    c.stop_publishing();
    let nodes = wait_for_states(&a, &[("node-a", Up), ("node-b", Up), ("node-c", Gone)]).await;
    assert!(nodes[2].last_seen_secs >= 2, "gone after the gone time: {:?}", nodes[2]);
    wait_for_states(&b, &[("node-a", Up), ("node-b", Up), ("node-c", Gone)]).await;

    // node-b leaves cleanly: the others see it left, not gone.
    b.leave().await;
    wait_for_states(&a, &[("node-a", Up), ("node-b", Left), ("node-c", Gone)]).await;
    let nodes = a.nodes();
    assert!(nodes[1].heartbeat.left);
    assert_eq!(nodes[1].heartbeat.pipelines.len(), 1, "the last heartbeat still says what it ran");
    drop((a, b, c));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_with_the_broker_gone_gives_up_after_the_leave_timeout() {
    let mut broker = TansuBroker::start();
    let kafka = KafkaConfig::new(broker.bootstrap());
    let config = ClusterConfig {
        status_topic: format!("_sluice_status-{}", unique_suffix()),
        heartbeat_interval_ms: 200,
        node_gone_after_ms: 2_000,
        ..ClusterConfig::default()
    };
    let a = join(&kafka, &config, "node-a", 0).await;
    wait_for_states(&a, &[("node-a", NodeState::Up)]).await;
    broker.stop();
    // The append alone would wait for its own timeout (LOG_APPEND_TIMEOUT, 30 s); a shutdown
    // waits for the last heartbeat only LEAVE_TIMEOUT.
    assert!(LEAVE_TIMEOUT < LOG_APPEND_TIMEOUT);
    let left = tokio::time::timeout(LOG_APPEND_TIMEOUT, a.leave()).await;
    assert!(left.is_ok(), "leave gave up after LEAVE_TIMEOUT ({LEAVE_TIMEOUT:?})");
}
