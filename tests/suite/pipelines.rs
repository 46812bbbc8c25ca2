//! Pipelines end to end on a real Kafka-protocol broker (tansu, its own process on loopback):
//! exact outputs, dead letters, and no record lost when the runtime is killed, when a second
//! runtime joins and leaves, or when the broker goes away and comes back. One test runs on
//! librdkafka's mock cluster instead, whose brokers can be told to answer late.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use sluice::api::PipelineState;
use sluice::cache::{Cache, CacheBackend, MemoryCache, Namespace};
use sluice::engine::{Engine, Limits};
use sluice::kafka::KafkaConfig;
use sluice::pipeline::spec::{CacheSetting, ModuleDigest};
use sluice::pipeline::spec::{FailurePolicy, PipelineSpec, Processing};
use sluice::pipeline::{PartitionState, Pipeline, PipelineStats, StartOptions};
use sluice_tests::fixtures::{crash_once_from, engine_with, load};
use sluice_tests::guests;
use sluice_tests::kafka::{
    ConsumedRecord, TansuBroker, TestBroker, client_config, committed_offsets, consume_all, produce, unique_suffix,
};
use sluice_tests::process::ServeProcess;

/// How long a test waits for outputs before it fails.
const OUTPUT_TIMEOUT: Duration = Duration::from_secs(90);

/// The topics of one test's pipeline.
struct Topics {
    input: String,
    output: String,
    dead_letters: String,
}

fn topics(broker: &impl TestBroker, partitions: i32) -> Topics {
    let id = unique_suffix();
    let topics = Topics { input: format!("in-{id}"), output: format!("out-{id}"), dead_letters: format!("dlq-{id}") };
    broker.create_topic(&topics.input, partitions);
    broker.create_topic(&topics.output, partitions);
    broker.create_topic(&topics.dead_letters, 1);
    topics
}

fn spec(name: &str, topics: &Topics, guest: &str) -> PipelineSpec {
    PipelineSpec {
        name: format!("{name}-{}", unique_suffix()),
        inputs: vec![topics.input.clone()],
        outputs: BTreeMap::from([("default".to_string(), topics.output.clone())]),
        module: ModuleDigest::of(&std::fs::read(guests::component(guest)).expect("the guest is built")),
        cache: CacheSetting::default(),
        namespace: None,
        config: BTreeMap::new(),
        processing: Processing {
            dead_letter_topic: Some(topics.dead_letters.clone()),
            linger_ms: 5,
            ..Processing::default()
        },
        group: Default::default(),
    }
}

async fn start(engine: &Engine, broker: &impl TestBroker, spec: PipelineSpec, guest: &str) -> Pipeline {
    start_with_cache(engine, broker, spec, guest).await.0
}

/// Starts a pipeline of `guest` on a fresh in-memory cache, returned with the cache.
async fn start_with_cache(
    engine: &Engine,
    broker: &impl TestBroker,
    spec: PipelineSpec,
    guest: &str,
) -> (Pipeline, Cache) {
    let module = load(engine, guest);
    let cache = Cache::new(Arc::new(MemoryCache::new()), Namespace::new(spec.namespace()).unwrap());
    let pipeline = Pipeline::start(spec, &KafkaConfig::new(broker.bootstrap()), engine, module, cache.clone())
        .await
        .expect("pipeline starts");
    (pipeline, cache)
}

/// `count` records `id-0`.. spread over `partitions`, keyed by their number.
async fn produce_ids(bootstrap: &str, topic: &str, partitions: i32, range: std::ops::Range<usize>) {
    let values: Vec<(i32, String, String)> =
        range.map(|n| ((n % partitions as usize) as i32, n.to_string(), format!("id-{n}"))).collect();
    let records: Vec<_> = values.iter().map(|(p, k, v)| (*p, Some(k.as_bytes()), v.as_bytes(), &[][..])).collect();
    produce(bootstrap, topic, &records).await;
}

/// Reads `topic` from the beginning until every value of `wanted` has been seen (duplicates
/// are allowed: delivery is at-least-once) or the timeout passes. Returns the values seen.
async fn read_until_seen(bootstrap: &str, topic: &str, partitions: i32, wanted: &BTreeSet<String>) -> BTreeSet<String> {
    let consumer: StreamConsumer = client_config(bootstrap)
        .set("group.id", format!("checker-{}", unique_suffix()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("checker consumer");
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&list).unwrap();
    let deadline = tokio::time::Instant::now() + OUTPUT_TIMEOUT;
    let mut seen = BTreeSet::new();
    while !wanted.is_subset(&seen) {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(message)) => {
                seen.insert(ConsumedRecord::from_message(&message).value_text());
            }
            Ok(Err(_)) => {}
            Err(_) => break,
        }
    }
    seen
}

/// The offset after the last record written to each partition.
fn next_offsets(written: &[(i32, i64)]) -> BTreeMap<i32, i64> {
    let mut next = BTreeMap::new();
    for (partition, offset) in written {
        let entry = next.entry(*partition).or_insert(0);
        *entry = (*entry).max(offset + 1);
    }
    next
}

fn ids(range: std::ops::Range<usize>) -> BTreeSet<String> {
    range.map(|n| format!("id-{n}")).collect()
}

fn missing(wanted: &BTreeSet<String>, seen: &BTreeSet<String>) -> Vec<String> {
    wanted.difference(seen).take(10).cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_partition_word_count_stores_exact_counts() {
    word_count_stores_exact_counts("word-count").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_partition_word_count_in_python_stores_exact_counts() {
    word_count_stores_exact_counts("word-count-py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_partition_word_count_in_javascript_stores_exact_counts() {
    word_count_stores_exact_counts("word-count-js").await;
}

/// The word count of `guest` as a pipeline over 3 partitions: one output per word occurrence,
/// exact counters in the cache, every input committed.
async fn word_count_stores_exact_counts(guest: &str) {
    let broker = TansuBroker::start();
    let topics = topics(&broker, 3);
    let engine = engine_with(Limits::default());
    let (pipeline, cache) = start_with_cache(&engine, &broker, spec(guest, &topics, guest), guest).await;

    let sentences = ["the cat sat", "the dog ran", "a cat and a dog", "the end"];
    let mut records = Vec::new();
    for (i, sentence) in sentences.iter().cycle().take(60).enumerate() {
        records.push(((i % 3) as i32, None, sentence.as_bytes(), &[][..]));
    }
    let written = produce(&broker.bootstrap(), &topics.input, &records).await;

    let mut totals: HashMap<&str, usize> = HashMap::new();
    for (_, _, value, _) in &records {
        for word in std::str::from_utf8(value).unwrap().split_whitespace() {
            *totals.entry(word).or_default() += 1;
        }
    }
    let expected_outputs: usize = totals.values().sum();
    let outputs = consume_all(&broker.bootstrap(), &topics.output, expected_outputs, OUTPUT_TIMEOUT).await;
    assert_eq!(outputs.len(), expected_outputs, "every word of every record gives one output");

    // Each counter holds the exact number of the word's occurrences. Partitions run in
    // parallel and a call's increments are its own view until it succeeds (docs/delivery.md),
    // so a count two partitions reported at the same moment can repeat; each is still between
    // 1 and the total.
    for (word, n) in &totals {
        let stored = cache.get(&format!("wc:{word}")).await.expect("read counter").expect("counter exists");
        assert_eq!(String::from_utf8(stored).unwrap(), n.to_string(), "stored count of {word:?}");
    }
    for output in &outputs {
        let count: usize = output.value_text().parse().unwrap();
        let n = totals[output.key_text().as_str()];
        assert!((1..=n).contains(&count), "running count {count} of {:?} is within 1..={n}", output.key_text());
    }
    let group = pipeline.spec().group_id();
    pipeline.stop().await;
    // Every input record was committed: each partition's committed offset is the one after
    // its last record.
    let committed = committed_offsets(&broker.bootstrap(), &group, &topics.input).await;
    assert_eq!(committed, next_offsets(&written));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_and_looping_records_are_dead_lettered_while_the_rest_flows_on() {
    let broker = TansuBroker::start();
    let topics = topics(&broker, 1);
    let limits = Limits { max_cpu_per_call: Duration::from_millis(300), ..Limits::default() };
    let engine = engine_with(limits);
    let spec = spec("poison", &topics, "hostile");
    let pipeline_name = spec.name.clone();
    let pipeline = start(&engine, &broker, spec, "hostile").await;

    let values = ["a", "panic", "b", "loop", "c", "fail"];
    let headers = [("trace", &b"t-1"[..])];
    let records: Vec<_> = values.iter().map(|v| (0, Some(&b"key"[..]), v.as_bytes(), &headers[..])).collect();
    let written = produce(&broker.bootstrap(), &topics.input, &records).await;

    // The good records of the batch pass through, in order.
    let outputs = consume_all(&broker.bootstrap(), &topics.output, 3, OUTPUT_TIMEOUT).await;
    let passed: Vec<String> = outputs.iter().map(ConsumedRecord::value_text).collect();
    assert_eq!(passed, vec!["a", "b", "c"]);

    // Each failing record is a dead letter: original key, value and headers, plus why.
    let dead = consume_all(&broker.bootstrap(), &topics.dead_letters, 3, OUTPUT_TIMEOUT).await;
    assert_eq!(dead.len(), 3, "three dead letters");
    let header = |r: &ConsumedRecord, k: &str| String::from_utf8(r.header(k).unwrap_or_default().to_vec()).unwrap();
    let expect =
        [("panic", written[1].1, "trap"), ("loop", written[3].1, "cpu-limit"), ("fail", written[5].1, "record-error")];
    for (record, (value, offset, kind)) in dead.iter().zip(expect) {
        assert_eq!(record.value_text(), value);
        assert_eq!(record.key.as_deref(), Some(&b"key"[..]));
        assert_eq!(header(record, "trace"), "t-1", "original headers are kept");
        assert_eq!(header(record, "sluice.pipeline"), pipeline_name);
        assert_eq!(header(record, "sluice.source.topic"), topics.input);
        assert_eq!(header(record, "sluice.source.partition"), "0");
        assert_eq!(header(record, "sluice.source.offset"), offset.to_string());
        assert_eq!(header(record, "sluice.error.kind"), kind);
        assert!(header(record, "sluice.module").starts_with("sha256:"));
        assert_eq!(header(record, "sluice.error.attempts"), "1");
    }
    let poison = format!("poison record at offset {}", written[1].1);
    assert!(header(&dead[0], "sluice.error.message").contains(&poison));
    assert!(header(&dead[1], "sluice.error.message").contains("CPU time"));

    let status = pipeline.status();
    assert_eq!((status.records_out, status.dead_letters), (3, 3));
    let faults = &status.faults;
    assert!(faults.calls_failed.get("trap").copied().unwrap_or(0) >= 1, "the panic is counted: {faults:?}");
    assert!(faults.calls_failed.get("cpu-limit").copied().unwrap_or(0) >= 1, "the loop is counted: {faults:?}");
    assert!(faults.instance_rebuilds >= 2, "an instance is built again after each: {faults:?}");
    let group = pipeline.spec().group_id();
    pipeline.stop().await;
    let committed = committed_offsets(&broker.bootstrap(), &group, &topics.input).await;
    assert_eq!(committed, next_offsets(&written), "the whole partition was committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_leaks_until_its_memory_limit_is_rebuilt_and_every_failed_call_is_counted_though_no_record_fails()
{
    let broker = TansuBroker::start();
    let topics = topics(&broker, 1);
    // Each `leak` record keeps 1 MiB in the instance: 40 of them cannot all run on one
    // instance under a 16 MiB limit, but each runs alone on a fresh one.
    let limits = Limits { max_memory_bytes: 16 << 20, ..Limits::default() };
    let engine = engine_with(limits);
    let pipeline = start(&engine, &broker, spec("leak", &topics, "hostile"), "hostile").await;
    let records: Vec<_> = (0..40).map(|_| (0, None, &b"leak"[..], &[][..])).collect();
    produce(&broker.bootstrap(), &topics.input, &records).await;

    let outputs = consume_all(&broker.bootstrap(), &topics.output, 40, OUTPUT_TIMEOUT).await;
    assert_eq!(outputs.len(), 40, "every record passes through in the end");
    let status = pipeline.status();
    pipeline.stop().await;
    assert_eq!((status.failed, status.dead_letters), (0, 0), "no record is at fault: {status:?}");
    // Yet nothing of what it took is hidden: a call that reached the memory limit is counted,
    // with the instance built again and the records run again; an instance retired for its
    // memory before it trapped is counted too. Which of the two happens depends on how the
    // records were batched.
    let faults = &status.faults;
    let memory_limit = faults.calls_failed.get("memory-limit").copied().unwrap_or(0);
    assert_eq!(faults.calls_failed_total(), memory_limit, "only memory limits: {faults:?}");
    assert!(memory_limit + faults.instances_retired >= 1, "the leak is seen: {faults:?}");
    if memory_limit > 0 {
        assert!(faults.instance_rebuilds >= 1 && faults.reruns >= 1, "{faults:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_bisected_around_a_trapping_record_applies_exactly_the_increments_of_the_records_that_succeeded() {
    let broker = TansuBroker::start();
    let topics = topics(&broker, 1);
    let engine = engine_with(Limits::default());
    let spec = spec("exact-counts", &topics, "tally");
    let cache = MemoryCache::new();
    let handle = Cache::new(Arc::new(cache.clone()), Namespace::new(spec.namespace()).unwrap());
    let namespace = spec.namespace().to_owned();
    let pipeline =
        Pipeline::start(spec, &KafkaConfig::new(broker.bootstrap()), &engine, load(&engine, "tally"), handle)
            .await
            .expect("pipeline starts");

    // 60 records of three words each; the 37th counts its words and then traps, in whatever
    // batch it lands: every attempt that contains it fails, and the attempts are split until
    // it stands alone.
    let sentences = ["the cat sat", "the dog ran", "a cat and"];
    let mut values: Vec<String> = sentences.iter().cycle().take(60).map(|s| s.to_string()).collect();
    values[37] = "panic the cat cat".to_owned();
    let records: Vec<_> = values.iter().map(|v| (0, None, v.as_bytes(), &[][..])).collect();
    produce(&broker.bootstrap(), &topics.input, &records).await;

    let mut totals: BTreeMap<&str, i64> = BTreeMap::new();
    for value in values.iter().filter(|v| !v.starts_with("panic ")) {
        for word in value.split_whitespace() {
            *totals.entry(word).or_default() += 1;
        }
    }
    let expected_outputs = totals.values().sum::<i64>() as usize;
    let outputs = consume_all(&broker.bootstrap(), &topics.output, expected_outputs, OUTPUT_TIMEOUT).await;
    assert_eq!(outputs.len(), expected_outputs, "every word of every successful record gives one output");
    let dead = consume_all(&broker.bootstrap(), &topics.dead_letters, 1, OUTPUT_TIMEOUT).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].value_text(), values[37]);
    pipeline.stop().await;

    for (word, total) in &totals {
        let stored = cache.get(&format!("{namespace}:wc:{word}")).await.unwrap();
        assert_eq!(stored, Some(total.to_string().into_bytes()), "count of {word:?}");
    }
    // The running counts in the outputs are 1..=n for each word, each once: no failed attempt
    // moved a counter.
    let mut counts: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for output in &outputs {
        counts.entry(output.key_text()).or_default().push(output.value_text().parse().unwrap());
    }
    for (word, seen) in counts {
        assert_eq!(seen, (1..=totals[word.as_str()]).collect::<Vec<_>>(), "running counts of {word:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_resumes_after_the_broker_goes_away_and_comes_back() {
    let storage = tempfile::tempdir().unwrap();
    let mut broker = TansuBroker::start_persistent(storage.path());
    let topics = topics(&broker, 2);
    let engine = engine_with(Limits::default());
    let pipeline = start(&engine, &broker, spec("outage", &topics, "passthrough"), "passthrough").await;
    let bootstrap = broker.bootstrap();

    produce_ids(&bootstrap, &topics.input, 2, 0..200).await;
    let first = read_until_seen(&bootstrap, &topics.output, 2, &ids(0..200)).await;
    assert!(missing(&ids(0..200), &first).is_empty(), "before the outage: missing {:?}", missing(&ids(0..200), &first));

    broker.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    broker.restart();

    produce_ids(&bootstrap, &topics.input, 2, 200..400).await;
    let all = read_until_seen(&bootstrap, &topics.output, 2, &ids(0..400)).await;
    assert!(missing(&ids(0..400), &all).is_empty(), "after the outage: missing {:?}", missing(&ids(0..400), &all));
    pipeline.stop().await;
}

/// `sluice serve --config <config>`, logging its status every second to `log`.
fn serve(config: &Path, log: PathBuf) -> ServeProcess {
    ServeProcess::spawn(&["--config".as_ref(), config.as_ref(), "--status-every".as_ref(), "1".as_ref()], log)
}

/// Like [`serve`], on a data directory of its own: a second runtime (a second node) beside
/// the first.
fn serve_node(config: &Path, data_dir: &Path, log: PathBuf) -> ServeProcess {
    let args: [&std::ffi::OsStr; 6] = [
        "--config".as_ref(),
        config.as_ref(),
        "--status-every".as_ref(),
        "1".as_ref(),
        "--data-dir".as_ref(),
        data_dir.as_ref(),
    ];
    ServeProcess::spawn(&args, log)
}

/// Writes a `sluice serve` config for one passthrough pipeline.
fn serve_config(dir: &Path, broker: &TansuBroker, topics: &Topics, name: &str) -> PathBuf {
    let path = dir.join("sluice.toml");
    let mut file = std::fs::File::create(&path).unwrap();
    write!(
        file,
        r#"data_dir = "{data}"

[kafka]
brokers = "{brokers}"

[[pipeline]]
name = "{name}"
inputs = ["{input}"]
outputs = {{ default = "{output}" }}
module = "{module}"
processing = {{ dead_letter_topic = "{dlq}", batch_size = 100, linger_ms = 5 }}
"#,
        data = dir.join("data").display(),
        brokers = broker.bootstrap(),
        input = topics.input,
        output = topics.output,
        module = guests::component("passthrough").display(),
        dlq = topics.dead_letters,
    )
    .unwrap();
    path
}

/// The name of the pipeline a [`serve_config`] file declares.
fn config_pipeline_name(config: &Path) -> String {
    let text = std::fs::read_to_string(config).unwrap();
    let line = text.lines().find(|l| l.starts_with("name = ")).expect("a pipeline name");
    line.trim_start_matches("name = ").trim_matches('"').to_string()
}

/// Waits until `check` is true of the runtime's log, or panics with the log.
async fn wait_for_log(runtime: &ServeProcess, what: &str, check: impl Fn(&str) -> bool) {
    let deadline = tokio::time::Instant::now() + OUTPUT_TIMEOUT;
    while !check(&runtime.log()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; log:
{}",
            runtime.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_runtime_mid_stream_and_restarting_it_loses_nothing() {
    let broker = TansuBroker::start();
    let topics = topics(&broker, 3);
    let dir = tempfile::tempdir().unwrap();
    let config = serve_config(dir.path(), &broker, &topics, &format!("kill-{}", unique_suffix()));
    let bootstrap = broker.bootstrap();
    const TOTAL: usize = 6_000;

    let mut runtime = serve(&config, dir.path().join("first.log"));
    produce_ids(&bootstrap, &topics.input, 3, 0..TOTAL / 2).await;
    // Let it get part of the way, then kill it without warning.
    wait_for_log(&runtime, "records processed", |log| {
        log.lines().any(|line| {
            let count = line.split("records_in=").nth(1).and_then(|rest| rest.split_whitespace().next());
            count.and_then(|n| n.parse::<u64>().ok()).is_some_and(|n| n > 0)
        })
    })
    .await;
    runtime.kill_9();
    produce_ids(&bootstrap, &topics.input, 3, TOTAL / 2..TOTAL).await;

    let restarted = serve(&config, dir.path().join("second.log"));
    let seen = read_until_seen(&bootstrap, &topics.output, 3, &ids(0..TOTAL)).await;
    let lost = missing(&ids(0..TOTAL), &seen);
    assert!(
        lost.is_empty(),
        "records lost across kill -9: {lost:?}
log:
{}",
        restarted.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runtimes_split_the_partitions_and_one_takes_over_when_the_other_stops() {
    let broker = TansuBroker::start();
    let topics = topics(&broker, 4);
    let dir = tempfile::tempdir().unwrap();
    let config = serve_config(dir.path(), &broker, &topics, &format!("pair-{}", unique_suffix()));
    let bootstrap = broker.bootstrap();
    const TOTAL: usize = 4_000;

    let mut first = serve(&config, dir.path().join("first.log"));
    let second = serve_node(&config, &dir.path().join("second-node"), dir.path().join("second.log"));
    let assigned = |log: &str| log.lines().rev().find(|l| l.contains("partitions assigned")).map(str::to_owned);
    // Both members end up with a share of the four partitions.
    let deadline = tokio::time::Instant::now() + OUTPUT_TIMEOUT;
    loop {
        let (a, b) = (assigned(&first.log()), assigned(&second.log()));
        if let (Some(a), Some(b)) = (&a, &b)
            && a.matches(&topics.input).count() + b.matches(&topics.input).count() == 4
            && a.contains(&topics.input)
            && b.contains(&topics.input)
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "partitions were not split: {a:?} / {b:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    produce_ids(&bootstrap, &topics.input, 4, 0..TOTAL / 2).await;
    let half = read_until_seen(&bootstrap, &topics.output, 4, &ids(0..TOTAL / 2)).await;
    // Rows of partitions a runtime gave up in the rebalance are history, not its work now.
    for node in [&first, &second] {
        let name = config_pipeline_name(&config);
        let report = node.client(None).get_pipeline(&name).unwrap();
        let rows = &report.status.partitions;
        let owned = rows.iter().filter(|r| r.owned).count();
        assert_eq!(owned, report.status.owned_partitions, "{report:#?}");
        assert!(rows.iter().filter(|r| !r.owned).all(|r| r.state == PartitionState::Stopped), "{report:#?}");
    }
    assert!(
        missing(&ids(0..TOTAL / 2), &half).is_empty(),
        "both running: missing {:?}",
        missing(&ids(0..TOTAL / 2), &half)
    );

    // One leaves cleanly; the other takes over its partitions.
    first.terminate();
    produce_ids(&bootstrap, &topics.input, 4, TOTAL / 2..TOTAL).await;
    let seen = read_until_seen(&bootstrap, &topics.output, 4, &ids(0..TOTAL)).await;
    let lost = missing(&ids(0..TOTAL), &seen);
    assert!(
        lost.is_empty(),
        "records lost after a member left: {lost:?}
log:
{}",
        second.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_policy_holds_the_partition_at_the_failed_record() {
    let broker = TansuBroker::start();
    let topics = topics(&broker, 1);
    let engine = engine_with(Limits::default());
    let mut spec = spec("block", &topics, "hostile");
    spec.processing.on_failure = FailurePolicy::Block;
    let group = spec.group_id();
    let pipeline = start(&engine, &broker, spec, "hostile").await;
    let values = ["a", "fail", "b"];
    let records: Vec<_> = values.iter().map(|v| (0, None, v.as_bytes(), &[][..])).collect();
    let written = produce(&broker.bootstrap(), &topics.input, &records).await;

    // The partition stops at the failed record: its state says so, and nothing after it flows.
    let blocked_at = written[1].1;
    let deadline = tokio::time::Instant::now() + OUTPUT_TIMEOUT;
    while !pipeline.status().partitions.iter().any(|p| p.state == PartitionState::Blocked { offset: blocked_at }) {
        assert!(tokio::time::Instant::now() < deadline, "partition never blocked: {:?}", pipeline.status());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let outputs = consume_all(&broker.bootstrap(), &topics.output, 2, Duration::from_secs(3)).await;
    assert_eq!(outputs.iter().map(ConsumedRecord::value_text).collect::<Vec<_>>(), vec!["a"]);
    let dead = consume_all(&broker.bootstrap(), &topics.dead_letters, 1, Duration::from_secs(1)).await;
    assert!(dead.is_empty(), "the block policy writes no dead letter");
    // The failure that blocks the partition is counted and named, not only the state.
    let status = pipeline.status();
    assert_eq!((status.failed, status.skipped, status.dead_letters), (1, 0, 0), "{status:?}");
    assert_eq!(status.blocked_partitions(), 1, "{status:?}");
    let row = status.partitions.iter().find(|p| p.partition == 0).expect("partition 0's row");
    assert_eq!(row.next_offset, Some(blocked_at), "the status says where the partition stands: {status:?}");
    let last_error = status.last_error.as_deref().unwrap_or_default();
    assert!(
        last_error.contains("rejected record") && last_error.contains(&format!("offset {blocked_at}")),
        "{status:?}"
    );
    pipeline.stop().await;
    // Only the records before the failed one are committed: it is processed again next time.
    let committed = committed_offsets(&broker.bootstrap(), &group, &topics.input).await;
    assert_eq!(committed, BTreeMap::from([(0, blocked_at)]));
}

/// An operator gets a blocked partition going again through the runtime's API: `resume` on
/// a running pipeline tries the failed record again (it fails again here, and is counted
/// again), and reloading a module that accepts the record lets the partition flow on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_retries_a_blocked_record_and_a_reload_runs_it_with_the_new_module() {
    use sluice::manager::{ManagerConfig, PipelineManager};
    let broker = TansuBroker::start();
    let topics = topics(&broker, 1);
    let data_dir = tempfile::tempdir().unwrap();
    let config = ManagerConfig::new(data_dir.path(), KafkaConfig::new(broker.bootstrap()));
    let manager = PipelineManager::open(config).await.unwrap();
    let hostile = manager.store_module(guests::component_bytes("hostile").into()).await.unwrap().info.digest;
    let passthrough = manager.store_module(guests::component_bytes("passthrough").into()).await.unwrap().info.digest;
    let mut spec = spec("block-resume", &topics, "hostile");
    spec.module = hostile.parse().unwrap();
    spec.processing.on_failure = FailurePolicy::Block;
    spec.processing.max_retries = 0;
    let name = spec.name.clone();
    manager.apply(spec).await.unwrap();
    let records: Vec<_> = ["fail", "a"].iter().map(|v| (0, None, v.as_bytes(), &[][..])).collect();
    let written = produce(&broker.bootstrap(), &topics.input, &records).await;
    let blocked_at = written[0].1;
    let blocked_with = |failed: u64| {
        let (manager, name) = (manager.clone(), name.clone());
        async move {
            let deadline = tokio::time::Instant::now() + OUTPUT_TIMEOUT;
            loop {
                let status = manager.get_status(&name).await.unwrap();
                let blocked =
                    status.partitions.iter().any(|p| p.state == PartitionState::Blocked { offset: blocked_at });
                if blocked && status.failed >= failed {
                    return status;
                }
                assert!(tokio::time::Instant::now() < deadline, "not blocked with {failed} failures: {status:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(blocked_with(1).await.failed, 1);

    manager.resume(&name).await.unwrap();
    let status = blocked_with(2).await;
    assert_eq!(status.failed, 2, "the resumed record ran again, failed again and holds the partition: {status:?}");

    manager.reload(&name, &passthrough).await.unwrap();
    let outputs = consume_all(&broker.bootstrap(), &topics.output, 2, OUTPUT_TIMEOUT).await;
    assert_eq!(outputs.iter().map(ConsumedRecord::value_text).collect::<Vec<_>>(), vec!["fail", "a"]);
    let status = manager.get_status(&name).await.unwrap();
    assert_eq!(status.blocked_partitions(), 0, "{status:?}");
    manager.shutdown().await;
}

/// A partition blocked at the first record it got has committed nothing, and its status still
/// says where it stands and how far behind it is: not "lag 0" while nothing moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_blocked_at_its_first_record_shows_its_position_and_lag() {
    let broker = TansuBroker::start();
    let topics = topics(&broker, 1);
    let engine = engine_with(Limits::default());
    let mut spec = spec("block-first", &topics, "hostile");
    spec.processing.on_failure = FailurePolicy::Block;
    let pipeline = start(&engine, &broker, spec, "hostile").await;
    let records: Vec<_> = ["fail", "a"].iter().map(|v| (0, None, v.as_bytes(), &[][..])).collect();
    let written = produce(&broker.bootstrap(), &topics.input, &records).await;

    let blocked_at = written[0].1;
    let deadline = tokio::time::Instant::now() + OUTPUT_TIMEOUT;
    loop {
        let status = pipeline.status();
        let row = status.partitions.iter().find(|p| p.partition == 0);
        if let Some(row) = row.filter(|r| r.state == PartitionState::Blocked { offset: blocked_at }) {
            assert_eq!(row.next_offset, Some(blocked_at), "{status:?}");
            // The lag comes with librdkafka's next statistics report.
            if row.lag == Some(2) {
                break;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no blocked row with lag 2: {status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pipeline.stop().await;
}

/// A partition worker that crashes (a panic: a runtime bug, here made by a test seam that
/// panics before one batch) is counted, logged in the status and the function log, and
/// started again from the partition's first record not done: no record is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_partition_worker_is_counted_and_started_again_without_losing_a_record() {
    let broker = TansuBroker::start();
    let topics = topics(&broker, 1);
    let engine = engine_with(Limits::default());
    let spec = spec("crash", &topics, "passthrough");
    let module = load(&engine, "passthrough");
    let cache = Cache::new(Arc::new(MemoryCache::new()), Namespace::new(spec.namespace()).unwrap());
    let (hook, crashed) = crash_once_from(5);
    let stats = Arc::new(PipelineStats::default());
    let options = StartOptions { before_batch: Some(hook), stats: stats.clone(), ..StartOptions::default() };
    let kafka = KafkaConfig::new(broker.bootstrap());
    let pipeline = Pipeline::start_with(spec, &kafka, &engine, module, cache, options).await.unwrap();
    produce_ids(&broker.bootstrap(), &topics.input, 1, 0..5).await;
    let first = read_until_seen(&broker.bootstrap(), &topics.output, 1, &ids(0..5)).await;
    assert!(ids(0..5).is_subset(&first), "before the crash: missing {:?}", missing(&ids(0..5), &first));

    produce_ids(&broker.bootstrap(), &topics.input, 1, 5..10).await;
    let all = read_until_seen(&broker.bootstrap(), &topics.output, 1, &ids(0..10)).await;
    assert!(ids(0..10).is_subset(&all), "after the crash: missing {:?}", missing(&ids(0..10), &all));
    assert!(crashed.load(std::sync::atomic::Ordering::SeqCst), "the seam made a worker crash");
    let status = pipeline.status();
    assert_eq!(status.worker_crashes, 1, "{status:?}");
    let error = status.last_error.clone().unwrap_or_default();
    assert!(
        error.contains(&format!("{}/0", topics.input))
            && error.contains("crashed (injected crash before offset 5)")
            && error.contains("starts again from offset 5"),
        "the last error names the partition, the panic and where it starts again: {error}"
    );
    let logged = stats.function_log().read(&Default::default()).entries;
    assert!(logged.iter().any(|e| e.message == error), "the crash is in the function log: {logged:?}");
    assert!(status.partitions.iter().all(|p| p.state == PartitionState::Running), "{status:?}");
    pipeline.stop().await;
}

/// A worker that crashes at the same record again and again does not loop for ever: after
/// `CRASHES_BEFORE_HOLD` crashes in a row there, the partition is held at that record,
/// `blocked`, until an operator resumes it; then the records from it on come through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_whose_worker_keeps_crashing_at_one_record_is_held_there_until_resumed() {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    let broker = TansuBroker::start();
    let topics = topics(&broker, 1);
    let engine = engine_with(Limits::default());
    let spec = spec("crash-loop", &topics, "passthrough");
    let module = load(&engine, "passthrough");
    let cache = Cache::new(Arc::new(MemoryCache::new()), Namespace::new(spec.namespace()).unwrap());
    let (broken, crashes) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicU32::new(0)));
    let hook = {
        let (broken, crashes) = (broken.clone(), crashes.clone());
        Arc::new(move |_: &str, _: i32, offset: i64| {
            if offset >= 3 && broken.load(Ordering::SeqCst) {
                crashes.fetch_add(1, Ordering::SeqCst);
                panic!("injected crash before offset {offset}");
            }
        })
    };
    let options = StartOptions { before_batch: Some(hook), ..StartOptions::default() };
    let kafka = KafkaConfig::new(broker.bootstrap());
    let pipeline = Pipeline::start_with(spec, &kafka, &engine, module, cache, options).await.unwrap();
    produce_ids(&broker.bootstrap(), &topics.input, 1, 0..3).await;
    let first = read_until_seen(&broker.bootstrap(), &topics.output, 1, &ids(0..3)).await;
    assert!(ids(0..3).is_subset(&first), "before the crashes: missing {:?}", missing(&ids(0..3), &first));

    produce_ids(&broker.bootstrap(), &topics.input, 1, 3..6).await;
    let deadline = tokio::time::Instant::now() + OUTPUT_TIMEOUT;
    let status = loop {
        let status = pipeline.status();
        if status.partitions.iter().any(|p| p.state == PartitionState::Blocked { offset: 3 }) {
            break status;
        }
        assert!(tokio::time::Instant::now() < deadline, "the partition was not held at offset 3: {status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.worker_crashes, u64::from(sluice::pipeline::CRASHES_BEFORE_HOLD), "{status:?}");
    assert_eq!(crashes.load(Ordering::SeqCst), sluice::pipeline::CRASHES_BEFORE_HOLD, "no worker ran while held");
    assert_eq!(status.blocked_partitions(), 1);
    let error = status.last_error.clone().unwrap_or_default();
    assert!(error.contains("3 workers in a row crashed at offset 3, so the partition is held there"), "{error}");

    // The fix: the record no longer crashes the worker; an operator resumes the partition.
    broken.store(false, Ordering::SeqCst);
    pipeline.unblock();
    let all = read_until_seen(&broker.bootstrap(), &topics.output, 1, &ids(0..6)).await;
    assert!(ids(0..6).is_subset(&all), "after the resume: missing {:?}", missing(&ids(0..6), &all));
    assert!(pipeline.status().partitions.iter().all(|p| p.state == PartitionState::Running));
    pipeline.stop().await;
}

/// A partition whose first batch is held (here by a Redis outage) shows where it stands and
/// how far behind it is, though it has done nothing yet: not "lag 0" while nothing moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_held_before_its_first_record_is_done_shows_its_position_and_lag() {
    let broker = TansuBroker::start();
    let topics = topics(&broker, 1);
    let engine = engine_with(Limits::default());
    let mut redis = sluice_tests::servers::RedisServer::start();
    let mut spec = spec("held-first", &topics, "dedup");
    spec.cache = redis.url().parse().unwrap();
    let backend = sluice::cache::connect(&redis.url()).await.expect("redis is up");
    let cache = Cache::new(backend, Namespace::new(spec.namespace()).unwrap());
    let module = load(&engine, "dedup");
    let pipeline = Pipeline::start(spec, &KafkaConfig::new(broker.bootstrap()), &engine, module, cache).await.unwrap();
    redis.stop();
    let values: Vec<String> = (0..3).map(|n| format!(r#"{{"id":"{n}"}}"#)).collect();
    let records: Vec<_> = values.iter().map(|v| (0, None, v.as_bytes(), &[][..])).collect();
    let written = produce(&broker.bootstrap(), &topics.input, &records).await;

    let deadline = tokio::time::Instant::now() + OUTPUT_TIMEOUT;
    loop {
        let status = pipeline.status();
        let row = status.partitions.iter().find(|p| p.partition == 0);
        // The lag comes with librdkafka's next statistics report.
        if row.is_some_and(|r| r.next_offset == Some(written[0].1) && r.lag == Some(3)) {
            assert_eq!(status.records_out, 0, "nothing passed without the cache: {status:?}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no row at offset {} with lag 3: {status:?}", written[0].1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    redis.restart();
    let wanted: BTreeSet<String> = values.into_iter().collect();
    let seen = read_until_seen(&broker.bootstrap(), &topics.output, 1, &wanted).await;
    assert!(wanted.is_subset(&seen), "after the outage: missing {:?}", missing(&wanted, &seen));
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_policy_drops_the_failed_record_and_goes_on() {
    let broker = TansuBroker::start();
    let topics = topics(&broker, 1);
    let engine = engine_with(Limits::default());
    let mut spec = spec("skip", &topics, "hostile");
    spec.processing.on_failure = FailurePolicy::Skip;
    let pipeline = start(&engine, &broker, spec, "hostile").await;
    let values = ["a", "fail", "b"];
    let records: Vec<_> = values.iter().map(|v| (0, None, v.as_bytes(), &[][..])).collect();
    produce(&broker.bootstrap(), &topics.input, &records).await;

    let outputs = consume_all(&broker.bootstrap(), &topics.output, 2, OUTPUT_TIMEOUT).await;
    assert_eq!(outputs.iter().map(ConsumedRecord::value_text).collect::<Vec<_>>(), vec!["a", "b"]);
    let dead = consume_all(&broker.bootstrap(), &topics.dead_letters, 1, Duration::from_secs(1)).await;
    assert!(dead.is_empty(), "the skip policy writes no dead letter");
    let status = pipeline.status();
    assert_eq!((status.failed, status.skipped, status.dead_letters), (1, 1, 0));
    assert!(status.last_error.as_deref().is_some_and(|e| e.contains("rejected record")), "{status:?}");
    pipeline.stop().await;
}

/// An output larger than the producer sends (librdkafka's `message.max.bytes`, 1,000,000
/// bytes by default) would fail on every attempt and hold the partition for good: its record
/// fails instead, naming the output, its size and the limit, and the records after it flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_larger_than_the_producer_sends_fails_its_record_and_the_partition_goes_on() {
    let broker = TansuBroker::start();
    let topics = topics(&broker, 1);
    let engine = engine_with(Limits::default());
    let pipeline = start(&engine, &broker, spec("big", &topics, "hostile"), "hostile").await;
    let values = ["a", "big", "b"];
    let records: Vec<_> = values.iter().map(|v| (0, None, v.as_bytes(), &[][..])).collect();
    let written = produce(&broker.bootstrap(), &topics.input, &records).await;

    let outputs = consume_all(&broker.bootstrap(), &topics.output, 2, OUTPUT_TIMEOUT).await;
    assert_eq!(outputs.iter().map(ConsumedRecord::value_text).collect::<Vec<_>>(), vec!["a", "b"]);
    let dead = consume_all(&broker.bootstrap(), &topics.dead_letters, 1, OUTPUT_TIMEOUT).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].value_text(), "big", "the dead letter is the input record");
    assert_eq!(dead[0].header("sluice.error.kind"), Some(&b"output-too-large"[..]));
    let message = String::from_utf8_lossy(dead[0].header("sluice.error.message").unwrap()).into_owned();
    assert!(message.contains("2097192 bytes") && message.contains("1000000 bytes"), "{message}");
    assert!(message.contains(&format!("{:?}", topics.output)), "names the output topic: {message}");
    let status = pipeline.status();
    assert_eq!((status.failed, status.dead_letters), (1, 1), "{status:?}");
    let last_error = status.last_error.unwrap_or_default();
    assert!(
        last_error.contains(&format!("offset {}", written[1].1)) && last_error.contains("output-too-large"),
        "{last_error}"
    );
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_failures_are_retried_then_dead_lettered_with_their_attempt_count() {
    let broker = TansuBroker::start();
    let topics = topics(&broker, 1);
    let engine = engine_with(Limits::default());
    let mut spec = spec("retry", &topics, "hostile");
    spec.processing.max_retries = 2;
    spec.processing.retry_backoff_ms = 10;
    let pipeline = start(&engine, &broker, spec, "hostile").await;
    produce(&broker.bootstrap(), &topics.input, &[(0, None, b"retry", &[][..]), (0, None, b"ok", &[][..])]).await;

    let dead = consume_all(&broker.bootstrap(), &topics.dead_letters, 1, OUTPUT_TIMEOUT).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].header("sluice.error.attempts"), Some(&b"3"[..]), "the first try and two retries");
    assert_eq!(dead[0].header("sluice.error.kind"), Some(&b"record-error"[..]));
    let outputs = consume_all(&broker.bootstrap(), &topics.output, 1, OUTPUT_TIMEOUT).await;
    assert_eq!(outputs[0].value_text(), "ok");
    pipeline.stop().await;
}

#[tokio::test]
async fn a_pipeline_naming_a_missing_topic_is_refused_at_start() {
    let broker = TansuBroker::start();
    let topics = topics(&broker, 1);
    let engine = engine_with(Limits::default());
    let mut spec = spec("typo", &topics, "passthrough");
    spec.outputs.insert("default".into(), "no-such-topic".into());
    let module = load(&engine, "passthrough");
    let cache = Cache::new(Arc::new(MemoryCache::new()), Namespace::new("typo").unwrap());
    let error = Pipeline::start(spec, &KafkaConfig::new(broker.bootstrap()), &engine, module, cache)
        .await
        .err()
        .expect("a missing output topic is an error");
    assert!(error.to_string().contains("\"no-such-topic\"] do not exist"), "{error:#}");
}

/// Runs the `dedup` example on `cache_url` over ids 0..200, taking the cache away while the
/// second half flows in: the records wait for the cache and none is lost or dead-lettered.
async fn cache_outage_loses_nothing(cache_url: &str, mut outage: impl FnMut(bool)) {
    let broker = TansuBroker::start();
    let topics = topics(&broker, 2);
    let engine = engine_with(Limits::default());
    let mut spec = spec("outage", &topics, "dedup");
    spec.cache = cache_url.parse().expect("a valid cache URL");
    // Retries of ordinary retryable failures are few; an outage is waited out regardless.
    spec.processing.max_retries = 1;
    spec.processing.retry_backoff_max_ms = 500;
    let module = load(&engine, "dedup");
    let backend = sluice::cache::connect(cache_url).await.expect("cache is up");
    let cache = Cache::new(backend, Namespace::new("outage").unwrap());
    let pipeline = Pipeline::start(spec, &KafkaConfig::new(broker.bootstrap()), &engine, module, cache).await.unwrap();
    let bootstrap = broker.bootstrap();
    let json = |range: std::ops::Range<usize>| range.map(|n| format!(r#"{{"id":"{n}"}}"#)).collect::<BTreeSet<_>>();
    let write = |range: std::ops::Range<usize>| {
        let values: Vec<String> = json(range).into_iter().collect();
        let bootstrap = bootstrap.clone();
        let topic = topics.input.clone();
        async move {
            let records: Vec<_> =
                values.iter().enumerate().map(|(i, v)| ((i % 2) as i32, None, v.as_bytes(), &[][..])).collect();
            produce(&bootstrap, &topic, &records).await;
        }
    };

    write(0..100).await;
    let first = read_until_seen(&bootstrap, &topics.output, 2, &json(0..100)).await;
    assert!(json(0..100).is_subset(&first), "before the outage: {:?}", missing(&json(0..100), &first));

    outage(true);
    write(100..200).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(pipeline.status().records_out < 200, "records must wait for the cache, not pass without it");
    outage(false);

    let all = read_until_seen(&bootstrap, &topics.output, 2, &json(0..200)).await;
    assert!(json(0..200).is_subset(&all), "after the outage: missing {:?}", missing(&json(0..200), &all));
    let dead = consume_all(&bootstrap, &topics.dead_letters, 1, Duration::from_secs(1)).await;
    assert!(dead.is_empty(), "an outage must not dead-letter records: {dead:?}");
    // The pipeline's status shows the outage and the calls made.
    let cache = pipeline.status().cache;
    assert!(cache.stats.unavailable > 0, "{cache:?}");
    assert!(cache.stats.writes >= 200, "{cache:?}");
    assert_eq!(cache.namespace, "outage");
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_holds_records_until_it_is_back_and_loses_none() {
    let mut redis = sluice_tests::servers::RedisServer::start();
    let url = redis.url();
    cache_outage_loses_nothing(&url, |down| if down { redis.stop() } else { redis.restart() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memcached_outage_holds_records_until_it_is_back_and_loses_none() {
    let mut memcached = sluice_tests::servers::MemcachedServer::start();
    let url = memcached.url();
    cache_outage_loses_nothing(&url, |down| if down { memcached.stop() } else { memcached.restart() }).await;
}

/// Partitions each runtime says it owns, from `GET /v1/pipelines`.
fn owned(nodes: &[ServeProcess]) -> Vec<u64> {
    nodes
        .iter()
        .map(|node| {
            node.client(None).list_pipelines().ok().and_then(|l| l.first().map(|p| p.partitions as u64)).unwrap_or(0)
        })
        .collect()
}

/// A runtime that owns no partition while its consumer group's records wait and nobody commits
/// them says so: `stalled` in `ls`, the reason in its status, `sluice_pipeline_stalled 1` in
/// `/metrics`, and one warning in its log.
///
/// The stall is made with two runtimes on a one-partition topic, killing the one that owns the
/// partition. Kafka would give the partition to the survivor after the session timeout; tansu
/// 0.6.0 does not (its group coordinator keeps the dead static member's assignment: the
/// survivor's rejoin returns only its own, empty, assignment), which is exactly the stall an
/// operator must be able to see.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_that_owns_no_partition_while_records_wait_shows_stalled() {
    let broker = TansuBroker::start();
    let topics = topics(&broker, 1);
    let dir = tempfile::tempdir().unwrap();
    let name = format!("stall-{}", unique_suffix());
    let config = serve_config(dir.path(), &broker, &topics, &name);
    let bootstrap = broker.bootstrap();

    let mut nodes = vec![
        serve_node(&config, &dir.path().join("node-a"), dir.path().join("a.log")),
        serve_node(&config, &dir.path().join("node-b"), dir.path().join("b.log")),
    ];
    // Wait until both have joined and one of them owns the partition.
    wait_for_log(&nodes[1], "the second node's first assignment", |log| log.contains("partitions assigned")).await;
    produce_ids(&bootstrap, &topics.input, 1, 0..100).await;
    read_until_seen(&bootstrap, &topics.output, 1, &ids(0..100)).await;
    let deadline = tokio::time::Instant::now() + OUTPUT_TIMEOUT;
    let owner = loop {
        let owned = owned(&nodes);
        if owned.iter().sum::<u64>() == 1 {
            break owned.iter().position(|&n| n == 1).unwrap();
        }
        assert!(tokio::time::Instant::now() < deadline, "no single owner of the partition: {owned:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    nodes[owner].kill_9();
    let survivor = &nodes[1 - owner];
    produce_ids(&bootstrap, &topics.input, 1, 100..200).await;

    wait_for_log(survivor, "a stall warning", |log| log.contains("pipeline stalled")).await;
    let client = survivor.client(None);
    let list = client.list_pipelines().unwrap();
    let row = &list[0];
    assert_eq!(row.state, PipelineState::Stalled, "{list:?}");
    assert_eq!(row.partitions, 0, "{list:?}");
    let report = client.get_pipeline(&name).unwrap();
    let reason = report.status.stalled.clone().unwrap_or_default();
    assert!(reason.contains("owns no partitions") && reason.contains("records waiting"), "{report:?}");
    let metrics = client.metrics().unwrap();
    assert!(metrics.contains(&format!("sluice_pipeline_stalled{{pipeline=\"{name}\"}} 1")), "{metrics}");
    let warnings = survivor.log().matches("pipeline stalled").count();
    assert_eq!(warnings, 1, "the stall is logged once:\n{}", survivor.log());
}

/// Waits for a `sluice serve` process to exit by itself, or panics with its log.
async fn wait_for_exit(runtime: &mut ServeProcess, within: Duration) -> std::process::ExitStatus {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(status) = runtime.try_wait() {
            return status;
        }
        assert!(tokio::time::Instant::now() < deadline, "the runtime did not exit; log:\n{}", runtime.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A shutdown has a documented bound (`serve::SHUTDOWN_TIMEOUT`, 30 s); the wait here is
/// longer so a busy machine does not fail it, and still far below a hang.
const EXIT_WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_the_broker_gone_stops_every_pipeline_and_ends_the_process() {
    let mut broker = TansuBroker::start();
    let topics = topics(&broker, 2);
    let dir = tempfile::tempdir().unwrap();
    let config = serve_config(dir.path(), &broker, &topics, &format!("gone-{}", unique_suffix()));
    let mut runtime = serve(&config, dir.path().join("runtime.log"));
    produce_ids(&broker.bootstrap(), &topics.input, 2, 0..200).await;
    read_until_seen(&broker.bootstrap(), &topics.output, 2, &ids(0..200)).await;

    broker.stop();
    wait_for_log(&runtime, "the outage noticed", |log| log.contains("is unreachable")).await;
    runtime.signal_term();
    let status = wait_for_exit(&mut runtime, EXIT_WAIT).await;
    let log = runtime.log();
    assert!(log.contains("pipeline stopped"), "every pipeline stops:\n{log}");
    assert!(status.success(), "a clean exit within the bound, not the deadline's forced one: {status}\n{log}");
    assert!(!log.contains("trying again"), "nothing restarts once the shutdown began:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_start_up_stops_the_process_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there: the start-up waits on the cluster's metadata.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let broker = format!("127.0.0.1:{port}");
    let topics = Topics { input: "in".into(), output: "out".into(), dead_letters: "dlq".into() };
    let path = dir.path().join("sluice.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = \"{}\"\n[kafka]\nbrokers = \"{broker}\"\n[[pipeline]]\nname = \"early\"\ninputs = [\"{}\"]\noutputs = {{ default = \"{}\" }}\nmodule = \"{}\"\n",
            dir.path().join("data").display(),
            topics.input,
            topics.output,
            guests::component("passthrough").display()
        ),
    )
    .unwrap();
    let mut runtime = ServeProcess::spawn_unready(&["--config".as_ref(), path.as_ref()], dir.path().join("early.log"));
    wait_for_log(&runtime, "start-up under way", |log| log.contains("runtime node")).await;
    runtime.signal_term();
    let status = wait_for_exit(&mut runtime, EXIT_WAIT).await;
    assert!(status.success(), "a clean stop, not death by SIGTERM: {status}\n{}", runtime.log());
    assert!(runtime.log().contains("stopping during start-up"), "{}", runtime.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_is_logged_once_when_it_starts_and_once_when_it_ends() {
    let mut broker = TansuBroker::start();
    let topics = topics(&broker, 2);
    let dir = tempfile::tempdir().unwrap();
    let name = format!("outage-{}", unique_suffix());
    let config = serve_config(dir.path(), &broker, &topics, &name);
    let runtime = serve(&config, dir.path().join("runtime.log"));
    produce_ids(&broker.bootstrap(), &topics.input, 2, 0..100).await;
    read_until_seen(&broker.bootstrap(), &topics.output, 2, &ids(0..100)).await;

    broker.stop();
    wait_for_log(&runtime, "the outage", |log| log.contains("is unreachable")).await;
    // While the broker does not answer, the status still shows what the runtime knows of its
    // partitions.
    let status = std::process::Command::new(sluice_tests::process::sluice_binary())
        .args(["status", &name, "--url", runtime.url()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    assert!(text.contains("offsets unavailable"), "{text}");
    assert_eq!(text.matches("(stored here)").count(), 2, "a row per partition:\n{text}");
    broker.restart();
    wait_for_log(&runtime, "the recovery", |log| log.contains("reachable again")).await;
    produce_ids(&broker.bootstrap(), &topics.input, 2, 100..200).await;
    read_until_seen(&broker.bootstrap(), &topics.output, 2, &ids(0..200)).await;

    let log = runtime.log();
    let lines = |what: &str| log.lines().filter(|l| l.contains(what) && l.contains(&name)).count();
    assert_eq!(
        (lines("is unreachable"), lines("reachable again")),
        (1, 1),
        "one line each, naming the pipeline:\n{log}"
    );
    let metrics = runtime.client(None).metrics().unwrap();
    assert!(metrics.contains(&format!("sluice_pipeline_broker_outages_total{{pipeline=\"{name}\"}} 1")), "{metrics}");
}

/// Headers whose one name is the raw bytes `name`, which rdkafka's safe API (a `&str`) cannot
/// write but any other producer can.
#[allow(unsafe_code)]
fn headers_with_raw_name(name: &[u8], value: &[u8]) -> rdkafka::message::OwnedHeaders {
    use rdkafka::bindings as rdsys;
    let headers = rdkafka::message::OwnedHeaders::new();
    let native = headers.as_borrowed() as *const rdkafka::message::BorrowedHeaders as *mut rdsys::rd_kafka_headers_t;
    // SAFETY: a `BorrowedHeaders` reference is the address of the librdkafka headers it views,
    // here those of `headers`, which this function owns and nothing else uses yet; librdkafka
    // copies the name and the value, two live slices of the lengths given.
    let error = unsafe {
        rdsys::rd_kafka_header_add(
            native,
            name.as_ptr().cast(),
            name.len() as isize,
            value.as_ptr().cast(),
            value.len() as isize,
        )
    };
    assert_eq!(error, rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR);
    headers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_name_that_is_not_utf8_reaches_the_function_decoded_lossily() {
    // Found by reading rdkafka while fuzzing record conversion: its header reader unwraps the
    // name's UTF-8, so such a record panicked the partition worker and was never processed.
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let broker = TansuBroker::start();
    let topics = topics(&broker, 1);
    let engine = engine_with(Limits::default());
    let pipeline = start(&engine, &broker, spec("raw-header", &topics, "passthrough"), "passthrough").await;
    let producer: FutureProducer = client_config(&broker.bootstrap()).create().expect("producer");
    let record = FutureRecord::<[u8], [u8]>::to(&topics.input)
        .partition(0)
        .payload(b"after".as_slice())
        .headers(headers_with_raw_name(&[0xff, b'k'], b"v"));
    producer.send(record, Duration::from_secs(30)).await.expect("delivered");

    let outputs = consume_all(&broker.bootstrap(), &topics.output, 1, OUTPUT_TIMEOUT).await;
    assert_eq!(outputs.len(), 1, "the record was processed");
    assert_eq!(outputs[0].value_text(), "after");
    assert_eq!(outputs[0].headers, vec![("\u{fffd}k".to_string(), b"v".to_vec())]);
    pipeline.stop().await;
}

/// Offset commits the group coordinator refuses are counted and kept as the latest commit
/// error in status (and logged once, as a warning): until one succeeds, what was processed
/// since the last commit would be processed again by the next owner. Commits that work again
/// catch up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_offset_commits_are_counted_and_named_in_status_then_catch_up() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let broker = sluice_tests::kafka::MockBroker::start();
    let topics = topics(&broker, 1);
    let spec = spec("commits", &topics, "passthrough");
    let group = spec.group_id();
    let engine = engine_with(Limits::default());
    let pipeline = start(&engine, &broker, spec, "passthrough").await;
    // Automatic commits run every second: the next three are refused.
    broker.fail_requests(RDKafkaApiKey::OffsetCommit, RDKafkaRespErr::RD_KAFKA_RESP_ERR_OFFSET_METADATA_TOO_LARGE, 3);
    let records: Vec<_> = (0..10).map(|_| (0, None, &b"x"[..], &[][..])).collect();
    produce(&broker.bootstrap(), &topics.input, &records).await;

    let deadline = tokio::time::Instant::now() + OUTPUT_TIMEOUT;
    let status = loop {
        let status = pipeline.status();
        if status.commit_failures > 0 {
            break status;
        }
        assert!(tokio::time::Instant::now() < deadline, "no failed commit counted: {status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let error = status.last_commit_error.clone().unwrap_or_default();
    assert!(error.contains("OffsetMetadataTooLarge") || error.contains("metadata"), "{status:?}");
    // The refusals run out; the next commit covers every record.
    let deadline = tokio::time::Instant::now() + OUTPUT_TIMEOUT;
    while committed_offsets(&broker.bootstrap(), &group, &topics.input).await != BTreeMap::from([(0, 10)]) {
        assert!(tokio::time::Instant::now() < deadline, "the commits did not catch up: {:?}", pipeline.status());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    pipeline.stop().await;
}

/// A batch whose outputs the broker refuses is produced again until they are acknowledged,
/// and each failed attempt is counted, with the batch named as the latest error: a partition
/// held by a producer error is never "running, lag 0" without a word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_outputs_are_produced_again_and_each_failed_attempt_is_counted() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let broker = sluice_tests::kafka::MockBroker::start();
    let topics = topics(&broker, 1);
    let records: Vec<_> = (0..10).map(|_| (0, None, &b"x"[..], &[][..])).collect();
    produce(&broker.bootstrap(), &topics.input, &records).await;
    // From here on, the next two produce requests are refused for good (not retried by the
    // producer itself): the pipeline's own retry makes them again.
    broker.fail_requests(RDKafkaApiKey::Produce, RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED, 2);
    let mut spec = spec("delivery", &topics, "passthrough");
    spec.processing.retry_backoff_ms = 10;
    let engine = engine_with(Limits::default());
    let pipeline = start(&engine, &broker, spec, "passthrough").await;

    let deadline = tokio::time::Instant::now() + OUTPUT_TIMEOUT;
    let status = loop {
        let status = pipeline.status();
        if status.records_out == 10 && status.partitions.first().and_then(|p| p.next_offset) == Some(10) {
            break status;
        }
        assert!(tokio::time::Instant::now() < deadline, "the outputs were not all delivered: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.delivery_failures >= 1, "{status:?}");
    let error = status.last_error.unwrap_or_default();
    assert!(error.contains("producing the results of offsets 0") && error.contains("uthoriz"), "{error}");
    assert_eq!(status.failed, 0, "no record failed: only their delivery, which was made again");
    let outputs = consume_all(&broker.bootstrap(), &topics.output, 10, OUTPUT_TIMEOUT).await;
    assert!(outputs.len() >= 10, "at least once: {} outputs", outputs.len());
    pipeline.stop().await;
}

/// An error the consumer hands a partition's worker instead of a record is counted in status
/// (and logged, at most every few seconds), and the worker reads on: nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_errors_are_counted_and_the_partition_reads_on() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let broker = sluice_tests::kafka::MockBroker::start();
    let topics = topics(&broker, 1);
    let spec = spec("consume", &topics, "passthrough");
    // The first fetches are refused: librdkafka hands a topic authorization error to the
    // partition's reader, and fetches again.
    broker.fail_requests(RDKafkaApiKey::Fetch, RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED, 3);
    let engine = engine_with(Limits::default());
    let pipeline = start(&engine, &broker, spec, "passthrough").await;
    let records: Vec<_> = (0..10).map(|_| (0, None, &b"x"[..], &[][..])).collect();
    produce(&broker.bootstrap(), &topics.input, &records).await;

    let deadline = tokio::time::Instant::now() + OUTPUT_TIMEOUT;
    let status = loop {
        let status = pipeline.status();
        if status.records_out == 10 {
            break status;
        }
        assert!(tokio::time::Instant::now() < deadline, "the records did not all come through: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.consume_errors >= 1, "{status:?}");
    pipeline.stop().await;
}

/// One batch in flight: while the broker acknowledges a batch, the partition's worker already
/// runs the next one, and no further. Nothing is stored for commit before the broker
/// acknowledges it, and the outputs keep the input's order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_batch_runs_while_the_broker_acknowledges_the_one_before_and_nothing_is_committed_early() {
    // Two brokers: the input and the consumer group on broker 1, the output on broker 2,
    // whose answers are held back long enough to watch the worker meanwhile.
    let broker = sluice_tests::kafka::MockBroker::start_with_brokers(2);
    let id = unique_suffix();
    let topics = Topics { input: format!("in-{id}"), output: format!("out-{id}"), dead_letters: format!("dlq-{id}") };
    for (topic, leader) in [(&topics.input, 1), (&topics.output, 2), (&topics.dead_letters, 1)] {
        broker.create_topic(topic, 1);
        broker.set_leader(topic, 0, leader);
    }
    let mut spec = spec("in-flight", &topics, "passthrough");
    spec.processing.batch_size = 10;
    spec.processing.linger_ms = 0;
    broker.set_group_coordinator(&spec.group_id(), 1);
    let values: Vec<String> = (0..30).map(|n| format!("record-{n:02}")).collect();
    let records: Vec<_> = values.iter().map(|v| (0, None, v.as_bytes(), &[][..])).collect();
    produce(&broker.bootstrap(), &topics.input, &records).await;
    let held_back = Duration::from_secs(10);
    broker.set_round_trip_time(2, held_back);

    let engine = engine_with(Limits::default());
    let module = load(&engine, "passthrough");
    let cache = Cache::new(Arc::new(MemoryCache::new()), Namespace::new(spec.namespace()).unwrap());
    let pipeline = Pipeline::start(spec, &KafkaConfig::new(broker.bootstrap()), &engine, module, cache).await.unwrap();

    // The first batch's outputs wait for broker 2; the second batch runs meanwhile.
    let deadline = tokio::time::Instant::now() + OUTPUT_TIMEOUT;
    let status = loop {
        let status = pipeline.status();
        if status.records_in >= 20 {
            break status;
        }
        assert!(tokio::time::Instant::now() < deadline, "the second batch did not run: {status:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(status.records_in, 20, "a third batch ran before the first was acknowledged: {status:?}");
    assert_eq!(status.records_out, 0, "an output was counted before the broker acknowledged it: {status:?}");
    assert_eq!(
        status.partitions[0].next_offset,
        Some(0),
        "the partition stands at its first record until that record's batch is acknowledged"
    );

    broker.set_round_trip_time(2, Duration::ZERO);
    let deadline = tokio::time::Instant::now() + OUTPUT_TIMEOUT + held_back;
    loop {
        let status = pipeline.status();
        if status.records_out == 30 && status.partitions[0].next_offset == Some(30) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the batches were not all delivered and stored: {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let outputs = sluice_tests::kafka::consume_until(&broker.bootstrap(), &topics.output, OUTPUT_TIMEOUT, |seen| {
        seen.len() >= 30
    })
    .await;
    let seen: Vec<String> = outputs.iter().map(ConsumedRecord::value_text).collect();
    assert_eq!(seen, values, "the outputs are not the inputs in order, each once");
    pipeline.stop().await;
}
