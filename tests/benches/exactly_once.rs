//! Exactly-once against at-least-once: the same word-count pipeline over the same records, on
//! the in-memory cache and on a real Redis, in both modes, on librdkafka's mock cluster (the
//! broker here that commits transactions; tansu 0.6.0 cannot). Prints throughput, the ratio of
//! exactly-once to at-least-once, and the mean time per batch (first record to results
//! delivered: in exactly-once mode that includes the fenced cache apply and the transaction's
//! commit).
//!
//! `cargo bench -p sluice-tests --bench exactly_once` (or `make bench`). `SLUICE_BENCH_QUICK=1`
//! for a short run.

/// The allocator the `sluice` binary ships with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sluice::cache::{self, Cache, Namespace};
use sluice::kafka::KafkaConfig;
use sluice::pipeline::Pipeline;
use sluice::pipeline::spec::{FailurePolicy, Guarantee, PipelineSpec, Processing};
use sluice_tests::fixtures::{engine, load};
use sluice_tests::kafka::{MockBroker, client_config, unique_suffix};
use sluice_tests::servers::RedisServer;

const PARTITIONS: i32 = 4;
/// Distinct words the records draw from.
const VOCABULARY: usize = 1_000;

/// Writes `count` records of five words each to `topic`.
async fn fill(bootstrap: &str, topic: &str, count: usize) {
    let producer: FutureProducer =
        client_config(bootstrap).set("linger.ms", "10").set("batch.num.messages", "10000").create().unwrap();
    let mut pending = Vec::with_capacity(count);
    for n in 0..count {
        let value: String = (0..5).map(|i| format!("w{} ", (n * 7 + i * 131) % VOCABULARY)).collect();
        let mut record =
            FutureRecord::<str, str>::to(topic).payload(&value).partition((n % PARTITIONS as usize) as i32);
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                Err((_, returned)) => {
                    record = returned;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }
    }
    for delivery in pending {
        delivery.await.unwrap().unwrap();
    }
}

/// Waits until `topic` holds `count` records (sum of high watermarks).
async fn wait_for_count(bootstrap: &str, topic: &str, count: i64) {
    let consumer: StreamConsumer = client_config(bootstrap).set("group.id", "bench-watermarks").create().unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let mut total = 0;
        for p in 0..PARTITIONS {
            if let Ok((low, high)) = consumer.fetch_watermarks(topic, p, Duration::from_secs(5)) {
                total += high - low;
            }
        }
        if total >= count || Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One run: a word-count pipeline in `guarantee` mode on the cache at `cache_url` over
/// `count` records already in `input`. Returns the time to the last output and the mean
/// time per batch.
async fn run(
    broker: &MockBroker,
    input: &str,
    count: usize,
    cache_url: &str,
    guarantee: Guarantee,
) -> (Duration, Duration) {
    let bootstrap = broker.bootstrap();
    let output = format!("bench-out-{}", unique_suffix());
    broker.create_topic(&output, PARTITIONS);
    let engine = engine();
    let module = load(&engine, "word-count");
    let name = format!("bench-{}", unique_suffix());
    let spec = PipelineSpec {
        name: name.clone(),
        inputs: vec![input.to_owned()],
        outputs: BTreeMap::from([("default".to_string(), output.clone())]),
        module: module.digest().clone(),
        cache: Default::default(),
        namespace: None,
        config: BTreeMap::new(),
        processing: Processing { guarantee, on_failure: FailurePolicy::Skip, ..Processing::default() },
        group: Default::default(),
    };
    let backend = cache::connect(cache_url).await.unwrap();
    let cache = Cache::new(backend, Namespace::new(&name).unwrap());
    let started = Instant::now();
    let pipeline = Pipeline::start(spec, &KafkaConfig::new(&bootstrap), &engine, module, cache).await.unwrap();
    wait_for_count(&bootstrap, &output, (count * 5) as i64).await;
    let took = started.elapsed();
    let per_batch = pipeline.status().batch_latency.mean().unwrap_or_default();
    pipeline.stop().await;
    (took, per_batch)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::var_os("SLUICE_BENCH_QUICK").is_some();
    let count: usize = if quick { 10_000 } else { 100_000 };
    let broker = MockBroker::start();
    let input = format!("bench-in-{}", unique_suffix());
    broker.create_topic(&input, PARTITIONS);
    fill(&broker.bootstrap(), &input, count).await;
    let redis = RedisServer::start();
    println!(
        "word count (5 words a record, {VOCABULARY} distinct), {count} records, {PARTITIONS} partitions, batches of \
         500, on librdkafka's mock cluster"
    );
    println!("{:<10} {:<15} {:>9} {:>11} {:>14}", "cache", "guarantee", "seconds", "records/s", "ms per batch");
    for (label, url) in [("memory", "memory://".to_owned()), ("redis", redis.url())] {
        let mut rates = Vec::new();
        for (mode, guarantee) in [("at-least-once", Guarantee::AtLeastOnce), ("exactly-once", Guarantee::ExactlyOnce)] {
            let (took, per_batch) = run(&broker, &input, count, &url, guarantee).await;
            let rate = count as f64 / took.as_secs_f64();
            rates.push(rate);
            println!(
                "{label:<10} {mode:<15} {:>9.2} {rate:>11.0} {:>14.2}",
                took.as_secs_f64(),
                per_batch.as_secs_f64() * 1e3
            );
        }
        println!("{label}: exactly-once / at-least-once throughput ratio: {:.2}", rates[1] / rates[0]);
    }
}
