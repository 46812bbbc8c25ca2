//! The test broker speaks enough Kafka for the pipeline tests: tansu, driven by the bundled
//! librdkafka, returns every produced record exactly once, accepts an idempotent producer, keeps
//! a group's committed offsets, splits partitions between group members, and (with SQLite
//! storage) keeps records and commits across a restart while connected clients carry on.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use sluice_tests::kafka::{
    ConsumedRecord, TansuBroker, client_config, committed_offsets, consume_all, produce, unique_suffix,
};

/// Upper bound for reading back what a test wrote.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Upper bound for a group to reach the assignment a test waits for.
const REBALANCE_TIMEOUT: Duration = Duration::from_secs(45);

/// A test record: key `k{i}`, value `v{i}`, header `seq` = `i`, on a chosen partition.
struct Numbered {
    partition: i32,
    key: Vec<u8>,
    value: Vec<u8>,
    seq: Vec<u8>,
}

/// Records `0..count` spread round-robin over `partitions`.
fn numbered(count: usize, partitions: i32) -> Vec<Numbered> {
    (0..count)
        .map(|i| Numbered {
            partition: i as i32 % partitions,
            key: format!("k{i}").into_bytes(),
            value: format!("v{i}").into_bytes(),
            seq: i.to_string().into_bytes(),
        })
        .collect()
}

/// Writes `records` and returns where each landed.
async fn produce_numbered(bootstrap: &str, topic: &str, records: &[Numbered]) -> Vec<(i32, i64)> {
    let headers: Vec<[(&str, &[u8]); 1]> = records.iter().map(|r| [("seq", r.seq.as_slice())]).collect();
    let batch: Vec<_> = records
        .iter()
        .zip(&headers)
        .map(|(r, h)| (r.partition, Some(r.key.as_slice()), r.value.as_slice(), h.as_slice()))
        .collect();
    produce(bootstrap, topic, &batch).await
}

/// A member of `group` that starts from the earliest offset and commits only explicitly.
fn group_member(bootstrap: &str, group: &str, topic: &str) -> StreamConsumer {
    let consumer: StreamConsumer = client_config(bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .create()
        .expect("create group member");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

/// Receives one record within `wait`, ignoring transient client errors.
async fn recv_within(consumer: &StreamConsumer, wait: Duration) -> Option<ConsumedRecord> {
    match tokio::time::timeout(wait, consumer.recv()).await {
        Ok(Ok(message)) => Some(ConsumedRecord::from_message(&message)),
        Ok(Err(_)) | Err(_) => None,
    }
}

/// Receives `count` records from one group member, panicking after [`READ_TIMEOUT`].
async fn recv_n(consumer: &StreamConsumer, count: usize) -> Vec<ConsumedRecord> {
    let deadline = tokio::time::Instant::now() + READ_TIMEOUT;
    let mut records = Vec::new();
    while records.len() < count {
        assert!(tokio::time::Instant::now() < deadline, "read {} of {count} records", records.len());
        records.extend(recv_within(consumer, Duration::from_millis(200)).await);
    }
    records
}

/// Commits `last read + 1` for every partition in `records`, synchronously.
fn commit_after(consumer: &StreamConsumer, topic: &str, records: &[ConsumedRecord]) -> BTreeMap<i32, i64> {
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    for record in records {
        let entry = next.entry(record.partition).or_insert(0);
        *entry = (*entry).max(record.offset + 1);
    }
    let mut offsets = TopicPartitionList::new();
    for (&partition, &offset) in &next {
        offsets.add_partition_offset(topic, partition, Offset::Offset(offset)).expect("offset");
    }
    consumer.commit(&offsets, CommitMode::Sync).expect("commit");
    next
}

/// The partitions of `topic` currently assigned to `consumer`.
fn assigned(consumer: &StreamConsumer, topic: &str) -> BTreeSet<i32> {
    consumer.assignment().expect("assignment").elements_for_topic(topic).iter().map(|e| e.partition()).collect()
}

#[tokio::test]
async fn three_partition_topic_returns_every_record_exactly_once() {
    let broker = TansuBroker::start();
    broker.create_topic("spread", 3);
    let sent = numbered(30, 3);
    let landed = produce_numbered(&broker.bootstrap(), "spread", &sent).await;

    let mut read = consume_all(&broker.bootstrap(), "spread", sent.len(), READ_TIMEOUT).await;
    assert_eq!(read.len(), sent.len(), "records read back");
    // Nothing beyond what was sent: a second, longer read finds no extra record.
    let extra = consume_all(&broker.bootstrap(), "spread", sent.len() + 1, Duration::from_secs(2)).await;
    assert_eq!(extra.len(), sent.len(), "no record beyond those sent");

    read.sort_by_key(|r| (r.partition, r.offset));
    for partition in 0..3 {
        let offsets: Vec<i64> = read.iter().filter(|r| r.partition == partition).map(|r| r.offset).collect();
        assert_eq!(offsets, (0..10).collect::<Vec<i64>>(), "offsets of partition {partition}");
    }
    for (sent, (landed_partition, landed_offset)) in sent.iter().zip(&landed) {
        let record = read
            .iter()
            .find(|r| r.partition == *landed_partition && r.offset == *landed_offset)
            .expect("the record at its delivery offset");
        assert_eq!(record.partition, sent.partition);
        assert_eq!(record.key.as_deref(), Some(sent.key.as_slice()));
        assert_eq!(record.value.as_deref(), Some(sent.value.as_slice()));
        assert_eq!(record.headers, vec![("seq".to_string(), sent.seq.clone())]);
    }
}

#[tokio::test]
async fn idempotent_producer_writes_a_long_run_in_order_without_duplicates() {
    let broker = TansuBroker::start();
    broker.create_topic("ordered", 1);
    let sent = numbered(2_000, 1);
    let landed = produce_numbered(&broker.bootstrap(), "ordered", &sent).await;
    assert_eq!(landed, (0..2_000).map(|o| (0, o)).collect::<Vec<_>>(), "delivery offsets follow input order");

    let read = consume_all(&broker.bootstrap(), "ordered", sent.len(), READ_TIMEOUT).await;
    let values: Vec<String> = read.iter().map(ConsumedRecord::value_text).collect();
    let expected: Vec<String> = (0..2_000).map(|i| format!("v{i}")).collect();
    assert_eq!(values, expected);
}

#[tokio::test]
async fn a_group_commits_offsets_and_the_next_member_resumes_after_them() {
    let broker = TansuBroker::start();
    broker.create_topic("resume", 2);
    let bootstrap = broker.bootstrap();
    let sent = numbered(20, 2);
    produce_numbered(&bootstrap, "resume", &sent).await;
    let group = format!("resume-{}", unique_suffix());

    let first = group_member(&bootstrap, &group, "resume");
    let seen_first = recv_n(&first, 7).await;
    let committed = commit_after(&first, "resume", &seen_first);
    drop(first);
    assert_eq!(committed_offsets(&bootstrap, &group, "resume").await, committed);

    let second = group_member(&bootstrap, &group, "resume");
    let mut expected_rest: BTreeSet<(i32, i64)> = (0..2).flat_map(|p| (0..10).map(move |o| (p, o))).collect();
    for (partition, next) in &committed {
        expected_rest.retain(|(p, o)| p != partition || o >= next);
    }
    let seen_second = recv_n(&second, expected_rest.len()).await;
    let positions: BTreeSet<(i32, i64)> = seen_second.iter().map(|r| (r.partition, r.offset)).collect();
    assert_eq!(positions.len(), seen_second.len(), "no record twice");
    assert_eq!(positions, expected_rest, "the second member reads exactly what was not committed");
    let all = commit_after(&second, "resume", &seen_second);
    assert_eq!(committed_offsets(&bootstrap, &group, "resume").await, BTreeMap::from([(0, 10), (1, 10)]));
    assert_eq!(all, BTreeMap::from([(0, 10), (1, 10)]));
}

#[tokio::test]
async fn two_members_of_a_group_split_the_partitions() {
    let broker = TansuBroker::start();
    broker.create_topic("split", 4);
    let bootstrap = broker.bootstrap();
    let group = format!("split-{}", unique_suffix());
    let all: BTreeSet<i32> = (0..4).collect();

    let a = group_member(&bootstrap, &group, "split");
    let deadline = tokio::time::Instant::now() + REBALANCE_TIMEOUT;
    while assigned(&a, "split") != all {
        assert!(tokio::time::Instant::now() < deadline, "a lone member never got all partitions");
        recv_within(&a, Duration::from_millis(100)).await;
    }

    let b = group_member(&bootstrap, &group, "split");
    loop {
        let (of_a, of_b) = (assigned(&a, "split"), assigned(&b, "split"));
        if !of_a.is_empty() && !of_b.is_empty() && of_a.is_disjoint(&of_b) && &of_a | &of_b == all {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no split after the second member joined: {of_a:?} {of_b:?}");
        // Both members must keep polling for the rebalance to complete.
        recv_within(&a, Duration::from_millis(100)).await;
        recv_within(&b, Duration::from_millis(100)).await;
    }
    let (of_a, of_b) = (assigned(&a, "split"), assigned(&b, "split"));

    let sent = numbered(40, 4);
    produce_numbered(&bootstrap, "split", &sent).await;
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    let read_deadline = tokio::time::Instant::now() + READ_TIMEOUT;
    while got_a.len() + got_b.len() < sent.len() {
        assert!(tokio::time::Instant::now() < read_deadline, "read {} of 40", got_a.len() + got_b.len());
        got_a.extend(recv_within(&a, Duration::from_millis(100)).await);
        got_b.extend(recv_within(&b, Duration::from_millis(100)).await);
    }
    assert!(got_a.iter().all(|r| of_a.contains(&r.partition)), "a reads only its partitions {of_a:?}");
    assert!(got_b.iter().all(|r| of_b.contains(&r.partition)), "b reads only its partitions {of_b:?}");
    let positions: BTreeSet<(i32, i64)> = got_a.iter().chain(&got_b).map(|r| (r.partition, r.offset)).collect();
    assert_eq!(positions.len(), 40, "every record read once");
}

#[tokio::test]
async fn persistent_broker_keeps_records_and_commits_across_a_restart() {
    let storage = tempfile::tempdir().expect("storage dir");
    let mut broker = TansuBroker::start_persistent(storage.path());
    broker.create_topic("durable", 2);
    let bootstrap = broker.bootstrap();
    let group = format!("durable-{}", unique_suffix());
    produce_numbered(&bootstrap, "durable", &numbered(10, 2)).await;

    let member = group_member(&bootstrap, &group, "durable");
    let before = recv_n(&member, 10).await;
    let committed = commit_after(&member, "durable", &before);
    assert_eq!(committed, BTreeMap::from([(0, 5), (1, 5)]));

    broker.restart();
    assert_eq!(broker.bootstrap(), bootstrap, "same address after a restart");
    assert_eq!(committed_offsets(&bootstrap, &group, "durable").await, committed, "commits kept");
    let kept = consume_all(&bootstrap, "durable", 10, READ_TIMEOUT).await;
    assert_eq!(kept.len(), 10, "records kept");

    // The member connected before the restart reconnects and reads what is written after it.
    let more: Vec<_> = numbered(20, 2).split_off(10);
    produce_numbered(&bootstrap, "durable", &more).await;
    let after = recv_n(&member, 10).await;
    let positions: BTreeSet<(i32, i64)> = after.iter().map(|r| (r.partition, r.offset)).collect();
    assert_eq!(positions, (0..2).flat_map(|p| (5..10).map(move |o| (p, o))).collect());
}
