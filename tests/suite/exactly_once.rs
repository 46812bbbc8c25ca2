//! Exactly-once mode (`processing.guarantee = "exactly-once"`, docs/delivery.md), end to end.
//!
//! The runtime is killed with kill -9 several times mid-stream under a word count on a real
//! Redis: every Redis counter must equal its true count (no batch's increments applied twice,
//! none lost), and every record's outputs must be there.
//!
//! The broker is librdkafka's mock cluster ([`MockBroker`]), in the test process, because
//! tansu 0.6.0 cannot commit a transaction (it has no EndTxn handler; the last test pins that
//! this fails loudly). The mock cluster commits transactions but neither keeps the input
//! offsets sent with them nor hides aborted transactions from `read_committed` readers, so
//! each restart here replays the partition from its start and a killed run's uncommitted
//! outputs stay visible: these tests cannot check that each output is read once, or the values
//! a replay returns (docs/delivery.md says what was verified where).
//!
//! Each record has a word of its own (`id-N`, whose counter must end at 1) and words only its
//! partition counts (`pP-...`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use sluice::cache::{Cache, EffectLimits, Fence, MemoryCache, Namespace};
use sluice::kafka::KafkaConfig;
use sluice::pipeline::spec::{CacheSetting, FailurePolicy, Guarantee, ModuleDigest, PipelineSpec, Processing};
use sluice::pipeline::{PartitionState, Pipeline, StartOptions};
use sluice_tests::fixtures::{crash_once_from, engine, load};
use sluice_tests::guests;
use sluice_tests::kafka::{ConsumedRecord, MockBroker, TansuBroker, consume_until, produce, unique_suffix};
use sluice_tests::process::{ServeProcess, sluice_binary};
use sluice_tests::servers::RedisServer;

/// How long the test waits for the outputs of every record.
const OUTPUT_TIMEOUT: Duration = Duration::from_secs(180);
/// Input partitions.
const PARTITIONS: i32 = 3;

/// One run's pipeline, topics and files.
struct Setup {
    broker: MockBroker,
    redis: RedisServer,
    dir: tempfile::TempDir,
    name: String,
    input: String,
    output: String,
    dead_letters: String,
}

impl Setup {
    fn new(prefix: &str) -> Setup {
        let broker = MockBroker::start();
        // The mock cluster cannot create topics for a client (no CreateTopics): the runtime's
        // own log topics are made here, as `sluice dev` makes them.
        for topic in ["_sluice_registry", "_sluice_modules", "_sluice_status"] {
            broker.create_topic(topic, 1);
        }
        let id = unique_suffix();
        let (input, output, dead_letters) = (format!("in-{id}"), format!("out-{id}"), format!("dlq-{id}"));
        broker.create_topic(&input, PARTITIONS);
        broker.create_topic(&output, PARTITIONS);
        broker.create_topic(&dead_letters, 1);
        let dir = tempfile::tempdir().unwrap();
        Setup { broker, redis: RedisServer::start(), dir, name: format!("{prefix}-{id}"), input, output, dead_letters }
    }

    /// A `sluice serve` config for one exactly-once pipeline of `guest` on Redis.
    fn config(&self, guest: &str) -> PathBuf {
        let path = self.dir.path().join("sluice.toml");
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
cache = "{cache}"
processing = {{ guarantee = "exactly-once", dead_letter_topic = "{dlq}", batch_size = 40, linger_ms = 5, max_retries = 0 }}
group = {{ static_membership = true }}
"#,
            data = self.dir.path().join("data").display(),
            brokers = self.broker.bootstrap(),
            name = self.name,
            input = self.input,
            output = self.output,
            module = guests::component(guest).display(),
            cache = self.redis.url(),
            dlq = self.dead_letters,
        )
        .unwrap();
        path
    }

    fn serve(&self, config: &Path, run: usize) -> ServeProcess {
        let log = self.dir.path().join(format!("run-{run}.log"));
        ServeProcess::spawn(&["--config".as_ref(), config.as_ref(), "--status-every".as_ref(), "1".as_ref()], log)
    }

    /// The counter of `word` in Redis (the pipeline's namespace is its name).
    fn counter(&self, word: &str) -> Option<i64> {
        let client = redis::Client::open(self.redis.url()).unwrap();
        let mut connection = client.get_connection().unwrap();
        redis::cmd("GET").arg(format!("{}:wc:{word}", self.name)).query(&mut connection).unwrap()
    }
}

/// Record `n`'s value: its own word, a word of its partition, and one of four more of its
/// partition; `panic ` first for a poison record (the tally guest counts, then traps).
fn value(n: usize, poison: bool) -> String {
    let p = n % PARTITIONS as usize;
    format!("{}id-{n} p{p}-all p{p}-k{}", if poison { "panic " } else { "" }, n % 4)
}

/// Waits until a status line of `runtime` reports records processed.
async fn wait_for_progress(runtime: &ServeProcess) {
    let deadline = tokio::time::Instant::now() + OUTPUT_TIMEOUT;
    loop {
        let log = runtime.log();
        let processed = log.lines().any(|line| {
            let count = line.split("records_in=").nth(1).and_then(|rest| rest.split_whitespace().next());
            count.and_then(|n| n.parse::<u64>().ok()).is_some_and(|n| n > 0)
        });
        if processed {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "no progress; log:\n{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Produces `total` records in `kills + 1` parts; after each of the first `kills` parts a
/// runtime is started, and killed with kill -9 once it has processed some; after the last a
/// runtime runs to the end. Returns the last runtime.
async fn run_with_kills(
    setup: &Setup,
    guest: &str,
    total: usize,
    kills: usize,
    poison: impl Fn(usize) -> bool,
) -> ServeProcess {
    let config = setup.config(guest);
    let bootstrap = setup.broker.bootstrap();
    let values: Vec<(i32, String, String)> =
        (0..total).map(|n| ((n % PARTITIONS as usize) as i32, n.to_string(), value(n, poison(n)))).collect();
    let parts = kills + 1;
    let per_part = total.div_ceil(parts);
    for (run, chunk) in values.chunks(per_part).enumerate() {
        let records: Vec<_> = chunk.iter().map(|(p, k, v)| (*p, Some(k.as_bytes()), v.as_bytes(), &[][..])).collect();
        produce(&bootstrap, &setup.input, &records).await;
        let mut runtime = setup.serve(&config, run);
        if run + 1 == parts {
            return runtime;
        }
        wait_for_progress(&runtime).await;
        runtime.kill_9();
    }
    unreachable!("the last part returns")
}

/// The true count of every word of the records that are not poison.
fn true_counts(total: usize, poison: impl Fn(usize) -> bool) -> BTreeMap<String, i64> {
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    for n in (0..total).filter(|&n| !poison(n)) {
        for word in value(n, false).split_whitespace() {
            *counts.entry(word.to_owned()).or_default() += 1;
        }
    }
    counts
}

/// Reads `topic` until an output of every word in `counts` is seen.
async fn read_outputs(setup: &Setup, counts: &BTreeMap<String, i64>) -> Vec<ConsumedRecord> {
    consume_until(&setup.broker.bootstrap(), &setup.output, OUTPUT_TIMEOUT, |records| {
        let seen: BTreeSet<String> = records.iter().map(ConsumedRecord::key_text).collect();
        counts.keys().all(|word| seen.contains(word))
    })
    .await
}

/// Checks a run: an output of every word of every record, each Redis counter equal to its
/// true count, and batches committed in transactions.
fn check(setup: &Setup, runtime: &ServeProcess, outputs: &[ConsumedRecord], counts: &BTreeMap<String, i64>) {
    let seen: BTreeSet<String> = outputs.iter().map(ConsumedRecord::key_text).collect();
    let missing: Vec<_> = counts.keys().filter(|word| !seen.contains(*word)).take(10).collect();
    assert!(missing.is_empty(), "records whose outputs are missing: {missing:?}\nlog:\n{}", runtime.log());
    let wrong: Vec<_> = counts
        .iter()
        .filter_map(|(word, count)| {
            let stored = setup.counter(word);
            (stored != Some(*count)).then(|| format!("{word}: {stored:?}, true count {count}"))
        })
        .take(10)
        .collect();
    assert!(wrong.is_empty(), "Redis counters that are not the true count: {wrong:?}\nlog:\n{}", runtime.log());
    let report = runtime.client(None).get_pipeline(&setup.name).unwrap();
    assert!(report.status.transactions.committed > 0, "batches were committed in transactions: {:?}", report.status);
    let shown = std::process::Command::new(sluice_binary())
        .args(["status", &setup.name])
        .env("SLUICE_URL", runtime.url())
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("delivery   exactly-once: ") && shown.contains(" transactions committed"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_three_times_under_exactly_once_word_count_loses_no_output_and_leaves_exact_redis_counts() {
    let setup = Setup::new("eo-count");
    const TOTAL: usize = 1_200;
    let never = |_: usize| false;
    let runtime = run_with_kills(&setup, "word-count", TOTAL, 3, never).await;
    let counts = true_counts(TOTAL, never);
    let outputs = read_outputs(&setup, &counts).await;
    check(&setup, &runtime, &outputs, &counts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_exactly_once_with_a_guest_that_traps_every_100th_record_keeps_counts_exact_and_dead_letters_each_trap()
 {
    let setup = Setup::new("eo-trap");
    const TOTAL: usize = 1_200;
    let poison = |n: usize| n % 100 == 99;
    let runtime = run_with_kills(&setup, "tally", TOTAL, 2, poison).await;
    let counts = true_counts(TOTAL, poison);
    let outputs = read_outputs(&setup, &counts).await;
    check(&setup, &runtime, &outputs, &counts);

    // Each poison record is dead-lettered exactly once, with the trap named.
    let poisoned: BTreeSet<String> = (0..TOTAL).filter(|&n| poison(n)).map(|n| n.to_string()).collect();
    let letters = consume_until(&setup.broker.bootstrap(), &setup.dead_letters, OUTPUT_TIMEOUT, |records| {
        poisoned.is_subset(&records.iter().map(ConsumedRecord::key_text).collect())
    })
    .await;
    let keys: BTreeSet<String> = letters.iter().map(ConsumedRecord::key_text).collect();
    assert_eq!(keys, poisoned, "each trap is dead-lettered, and nothing else");
    let kind = letters[0].headers.iter().find(|(k, _)| k == "sluice.error.kind").map(|(_, v)| v.clone());
    assert_eq!(kind.as_deref(), Some(&b"trap"[..]), "the dead letter names the trap");
    let report = runtime.client(None).get_pipeline(&setup.name).unwrap();
    assert!(report.status.failed > 0, "traps are counted: {:?}", report.status);
}

/// A pipeline name starting with `prefix`, and its one-partition input and output topics,
/// created on `broker` with its dead-letter topic.
fn in_process_topics(broker: &MockBroker, prefix: &str) -> (String, String, String) {
    let id = unique_suffix();
    let (name, input, output) = (format!("{prefix}-{id}"), format!("in-{id}"), format!("out-{id}"));
    for topic in [&input, &output, &format!("{name}.dlq")] {
        broker.create_topic(topic, 1);
    }
    (name, input, output)
}

/// An exactly-once pipeline `name` of `guest` from `input` to `output`, on the in-memory
/// cache, with `processing` otherwise.
fn in_process_spec(name: &str, input: &str, output: &str, guest: &str, processing: Processing) -> PipelineSpec {
    PipelineSpec {
        name: name.to_owned(),
        inputs: vec![input.to_owned()],
        outputs: BTreeMap::from([("default".to_string(), output.to_owned())]),
        module: ModuleDigest::of(&std::fs::read(guests::component(guest)).unwrap()),
        cache: CacheSetting::default(),
        namespace: None,
        config: BTreeMap::new(),
        processing: Processing { guarantee: Guarantee::ExactlyOnce, ..processing },
        group: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_broker_that_cannot_commit_transactions_exactly_once_fails_loudly_and_commits_nothing() {
    // tansu 0.6.0 answers the rest of the transaction protocol but has no EndTxn handler.
    let broker = TansuBroker::start();
    let id = unique_suffix();
    let (input, output) = (format!("in-{id}"), format!("out-{id}"));
    broker.create_topic(&input, 1);
    broker.create_topic(&output, 1);
    let engine = engine();
    let spec = in_process_spec(
        &format!("eo-tansu-{id}"),
        &input,
        &output,
        "passthrough",
        Processing { on_failure: FailurePolicy::Skip, linger_ms: 5, ..Processing::default() },
    );
    let cache = Cache::new(Arc::new(MemoryCache::new()), Namespace::new(spec.namespace()).unwrap());
    let module = load(&engine, "passthrough");
    let pipeline = Pipeline::start(spec, &KafkaConfig::new(broker.bootstrap()), &engine, module, cache).await.unwrap();
    produce(&broker.bootstrap(), &input, &[(0, None, &b"a"[..], &[][..])]).await;

    let deadline = tokio::time::Instant::now() + OUTPUT_TIMEOUT;
    let status = loop {
        let status = pipeline.status();
        if status.transactions.aborted > 0 {
            break status;
        }
        assert!(tokio::time::Instant::now() < deadline, "no transaction failed: {status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let error = status.last_error.clone().unwrap_or_default();
    assert!(
        error.contains(&status.name) && error.contains("exactly-once") && error.contains("EndTxn"),
        "the status names the pipeline and the broker's missing EndTxn: {error}"
    );
    assert_eq!(status.transactions.committed, 0);
    assert_eq!(status.records_out, 0, "nothing is counted as delivered");
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_the_block_policy_exactly_once_applies_only_the_writes_of_the_records_before_the_failed_one() {
    let broker = MockBroker::start();
    let id = unique_suffix();
    let (input, output) = (format!("in-{id}"), format!("out-{id}"));
    broker.create_topic(&input, 1);
    broker.create_topic(&output, 1);
    let engine = engine();
    let spec = in_process_spec(
        &format!("eo-block-{id}"),
        &input,
        &output,
        "tally",
        Processing { on_failure: FailurePolicy::Block, max_retries: 0, linger_ms: 200, ..Processing::default() },
    );
    let cache = Cache::new(Arc::new(MemoryCache::new()), Namespace::new(spec.namespace()).unwrap());
    let module = load(&engine, "tally");
    let pipeline =
        Pipeline::start(spec, &KafkaConfig::new(broker.bootstrap()), &engine, module, cache.clone()).await.unwrap();
    // One batch: the record at offset 2 traps after counting; the ones after it ran in the
    // same batch, but run again once the partition is resumed, so their writes must wait.
    let values = ["before", "before", "panic failed", "after", "after"];
    let records: Vec<_> = values.iter().map(|v| (0, None, v.as_bytes(), &[][..])).collect();
    produce(&broker.bootstrap(), &input, &records).await;

    let deadline = tokio::time::Instant::now() + OUTPUT_TIMEOUT;
    loop {
        let status = pipeline.status();
        let blocked = status.partitions.iter().any(|p| p.state == PartitionState::Blocked { offset: 2 });
        if blocked && status.transactions.committed > 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the partition did not block at offset 2: {status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(cache.get("wc:before").await, Ok(Some(b"2".to_vec())), "the records before the failed one count");
    assert_eq!(cache.get("wc:failed").await, Ok(None), "the failed record's writes are dropped");
    assert_eq!(cache.get("wc:after").await, Ok(None), "the records after it have not counted yet");
    let outputs = consume_until(&broker.bootstrap(), &output, OUTPUT_TIMEOUT, |records| records.len() >= 2).await;
    let counted: Vec<(String, String)> = outputs.iter().map(|r| (r.key_text(), r.value_text())).collect();
    assert_eq!(counted, [("before".to_owned(), "1".to_owned()), ("before".to_owned(), "2".to_owned())]);
    let status = pipeline.status();
    assert_eq!(
        (status.failed, status.blocked_partitions()),
        (1, 1),
        "the blocking failure is counted once: {status:?}"
    );
    pipeline.stop().await;
}

/// A replayed batch that passes the cache's applied position is cut there: the records up to
/// it run again without applying their writes twice, and the records after it follow in a
/// batch of their own. None of them is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_batch_cut_at_the_applied_position_loses_none_of_the_records_after_the_cut() {
    let broker = MockBroker::start();
    let (name, input, output) = in_process_topics(&broker, "eo-cut");
    let spec = in_process_spec(
        &name,
        &input,
        &output,
        "passthrough",
        Processing { batch_size: 10, linger_ms: 500, ..Processing::default() },
    );
    let cache = Cache::new(Arc::new(MemoryCache::new()), Namespace::new(spec.namespace()).unwrap());
    // As if a runtime had applied the cache writes of offsets 0..=5 and died before its
    // transaction committed them: the partition resumes at offset 0.
    let mut call = cache.begin_call(EffectLimits::default());
    call.set("written-before", b"1", None).await.unwrap();
    let fence = Fence { key: cache.fence_key(&spec.name, &input, 0), first: 0, last: 5 };
    call.apply_fenced(&fence).await.unwrap();
    let values: Vec<String> = (0..10).map(|n| format!("record-{n}")).collect();
    let records: Vec<_> = values.iter().map(|v| (0, None, v.as_bytes(), &[][..])).collect();
    produce(&broker.bootstrap(), &input, &records).await;

    let engine = engine();
    let module = load(&engine, "passthrough");
    let pipeline =
        Pipeline::start(spec, &KafkaConfig::new(broker.bootstrap()), &engine, module, cache.clone()).await.unwrap();
    let deadline = tokio::time::Instant::now() + OUTPUT_TIMEOUT;
    loop {
        let status = pipeline.status();
        if status.partitions.first().and_then(|p| p.next_offset) == Some(10) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "offsets 6..=9 were not processed after the cut: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let outputs = consume_until(&broker.bootstrap(), &output, OUTPUT_TIMEOUT, |seen| seen.len() >= 10).await;
    let seen: Vec<String> = outputs.iter().map(ConsumedRecord::value_text).collect();
    assert_eq!(seen, values, "each record's output, once, in order");
    pipeline.stop().await;
}

/// A partition whose exactly-once setup fails (here the cache that holds its applied position
/// is down) says so rather than "running": it is `starting`, each failed attempt is counted in
/// `setup_failures` and its error is the last error. Once the cache is back the partition
/// starts and its records flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_whose_exactly_once_setup_fails_is_starting_with_the_error_until_it_succeeds() {
    let broker = MockBroker::start();
    let mut redis = RedisServer::start();
    let (name, input, output) = in_process_topics(&broker, "eo-setup");
    let engine = engine();
    let mut spec = in_process_spec(
        &name,
        &input,
        &output,
        "passthrough",
        Processing { linger_ms: 5, retry_backoff_ms: 10, ..Processing::default() },
    );
    spec.cache = redis.url().parse().unwrap();
    let backend = sluice::cache::connect(&redis.url()).await.expect("redis is up");
    let cache = Cache::new(backend, Namespace::new(spec.namespace()).unwrap());
    redis.stop();
    let module = load(&engine, "passthrough");
    let pipeline = Pipeline::start(spec, &KafkaConfig::new(broker.bootstrap()), &engine, module, cache).await.unwrap();
    produce(&broker.bootstrap(), &input, &[(0, None, &b"a"[..], &[][..])]).await;

    let deadline = tokio::time::Instant::now() + OUTPUT_TIMEOUT;
    let status = loop {
        let status = pipeline.status();
        if status.setup_failures >= 2 && status.partitions.iter().any(|p| p.state == PartitionState::Starting) {
            break status;
        }
        assert!(tokio::time::Instant::now() < deadline, "no partition starting with failed setups: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let error = status.last_error.clone().unwrap_or_default();
    assert!(
        error.contains(&name) && error.contains(&format!("{input}/0")) && error.contains("applied position"),
        "the last error names the pipeline, the partition and what failed: {error}"
    );
    assert!(status.partitions.iter().all(|p| p.state != PartitionState::Running), "{status:?}");

    redis.restart();
    let outputs = consume_until(&broker.bootstrap(), &output, OUTPUT_TIMEOUT, |o| !o.is_empty()).await;
    assert_eq!(outputs[0].value_text(), "a");
    let status = pipeline.status();
    assert!(status.partitions.iter().any(|p| p.state == PartitionState::Running), "{status:?}");
    pipeline.stop().await;
}

/// In exactly-once mode a crashed partition worker (a panic, made here by a test seam) is
/// started again from the offset its last transaction committed: it sets its transactional
/// producer up again and the records after that offset all come through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_exactly_once_worker_starts_again_from_its_last_committed_offset() {
    let broker = MockBroker::start();
    let (name, input, output) = in_process_topics(&broker, "eo-crash");
    let engine = engine();
    let spec =
        in_process_spec(&name, &input, &output, "passthrough", Processing { linger_ms: 5, ..Processing::default() });
    let cache = Cache::new(Arc::new(MemoryCache::new()), Namespace::new(spec.namespace()).unwrap());
    let module = load(&engine, "passthrough");
    let (hook, crashed) = crash_once_from(5);
    let options = StartOptions { before_batch: Some(hook), ..StartOptions::default() };
    let kafka = KafkaConfig::new(broker.bootstrap());
    let pipeline = Pipeline::start_with(spec, &kafka, &engine, module, cache, options).await.unwrap();
    let values: Vec<String> = (0..10).map(|n| format!("record-{n}")).collect();
    let records: Vec<_> = values.iter().map(|v| (0, None, v.as_bytes(), &[][..])).collect();
    produce(&broker.bootstrap(), &input, &records[..5]).await;
    consume_until(&broker.bootstrap(), &output, OUTPUT_TIMEOUT, |seen| seen.len() >= 5).await;

    produce(&broker.bootstrap(), &input, &records[5..]).await;
    let wanted: BTreeSet<&str> = values.iter().map(String::as_str).collect();
    let outputs = consume_until(&broker.bootstrap(), &output, OUTPUT_TIMEOUT, |seen| {
        let seen: BTreeSet<String> = seen.iter().map(ConsumedRecord::value_text).collect();
        wanted.iter().all(|w| seen.contains(*w))
    })
    .await;
    let seen: BTreeSet<String> = outputs.iter().map(ConsumedRecord::value_text).collect();
    assert!(wanted.iter().all(|w| seen.contains(*w)), "missing records after the crash: {seen:?}");
    assert!(crashed.load(std::sync::atomic::Ordering::SeqCst), "the seam made a worker crash");
    let status = pipeline.status();
    assert_eq!(status.worker_crashes, 1, "{status:?}");
    assert!(
        status.last_error.as_deref().is_some_and(|e| e.contains("starts again from offset 5")),
        "it starts again right after the batch its last transaction committed: {status:?}"
    );
    pipeline.stop().await;
}
