//! Kafka -> function -> Kafka throughput: a Sluice pipeline running the `passthrough` guest,
//! beside two hand-written native Rust consume-transform-produce loops that do the same work
//! with the same guarantee, parallelism and batching (one task per partition, batches of up to
//! 500 records with a 5 ms linger, produce, await every acknowledgement, then store offsets),
//! on the same broker in the same run: one awaits each batch's acknowledgements before it
//! fetches the next, as loops are written by hand; the other keeps one batch in flight, as
//! Sluice does. All write each output to the partition its key hashes to, so a batch waits on
//! the acknowledgements of every output partition, not only its own. Each side's CPU time per
//! record is printed too (the whole process's, the mock cluster's included).
//!
//! Two brokers: librdkafka's in-process mock cluster, which is not the bottleneck (the figure
//! that measures Sluice), and tansu on loopback, a real broker over TCP that caps both sides at
//! its own rate.
//!
//! `cargo bench -p sluice-tests --bench kafka` (or `make bench`). `SLUICE_BENCH_QUICK=1` for a
//! short run; `SLUICE_BENCH_BROKER=mock` or `tansu` for one broker.

/// The allocator the `sluice` binary ships with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use sluice::cache::{Cache, MemoryCache, Namespace};
use sluice::kafka::KafkaConfig;
use sluice::pipeline::Pipeline;
use sluice::pipeline::spec::{PipelineSpec, Processing};
use sluice_tests::fixtures::{engine, load};
use sluice_tests::kafka::{MockBroker, TansuBroker, client_config, unique_suffix};

const PARTITIONS: i32 = 4;
const VALUE_BYTES: usize = 100;
/// Records of the run on the mock cluster (`SLUICE_BENCH_MOCK_RECORDS` changes it). The mock
/// cluster keeps about 40,000 such records per partition and drops older ones.
const MOCK_RECORDS: usize = 100_000;

/// Writes `count` records of `VALUE_BYTES` to `topic` as fast as the producer allows.
async fn fill(bootstrap: &str, topic: &str, count: usize) {
    let producer: FutureProducer =
        client_config(bootstrap).set("linger.ms", "10").set("batch.num.messages", "10000").create().unwrap();
    let value = vec![b'v'; VALUE_BYTES];
    let mut pending = Vec::with_capacity(count);
    for n in 0..count {
        let key = n.to_string();
        let mut record = FutureRecord::to(topic).key(&key).payload(&value).partition((n % PARTITIONS as usize) as i32);
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

/// CPU time this process has used so far, all threads (the mock cluster's included).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which is in parentheses: utime and stime are the
    // 12th and 13th, in clock ticks of 10 ms.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// How a native loop waits for the broker's acknowledgements.
#[derive(Clone, Copy, PartialEq)]
enum Acks {
    /// Each batch's, before the next batch is fetched: the loop people write by hand.
    Awaited,
    /// One batch in flight, as Sluice does: the next batch is fetched (and transformed) while
    /// the broker acknowledges the one before, and produced once that one is acknowledged.
    Overlapped,
}

/// A batch in a native loop: offset, key and value of each record.
type NativeBatch = Vec<(i64, Option<Vec<u8>>, Option<Vec<u8>>)>;

/// The native baseline, with Sluice's parallelism and batching: one consumer assigned every
/// partition of `input`, one task per partition on its own queue, batches of up to 500
/// records (5 ms linger), each record produced to `output` (its key choosing the partition),
/// every acknowledgement awaited (as `acks` says), then the offsets stored; until `count`
/// records are done. Returns the time from the first record received to the last
/// acknowledgement (the consumer's start-up left out, as it is for Sluice).
async fn native_loop(bootstrap: &str, input: &str, output: &str, count: usize, acks: Acks) -> Duration {
    let first_record: Arc<std::sync::OnceLock<Instant>> = Arc::default();
    let consumer: Arc<StreamConsumer> = Arc::new(
        client_config(bootstrap)
            .set("group.id", format!("native-{}", unique_suffix()))
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap(),
    );
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        assignment.add_partition_offset(input, partition, Offset::Beginning).unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let producer: FutureProducer =
        client_config(bootstrap).set("enable.idempotence", "true").set("linger.ms", "5").create().unwrap();
    let per_partition = count / PARTITIONS as usize;
    let tasks: Vec<_> = (0..PARTITIONS)
        .map(|partition| {
            let queue = consumer.split_partition_queue(input, partition).expect("a partition queue");
            let (consumer, producer) = (consumer.clone(), producer.clone());
            let (input, output) = (input.to_owned(), output.to_owned());
            let first_record = first_record.clone();
            tokio::spawn(async move {
                let store = |next: i64| {
                    let mut list = TopicPartitionList::new();
                    list.add_partition_offset(&input, partition, Offset::Offset(next)).unwrap();
                    consumer.store_offsets(&list).unwrap();
                };
                let mut in_flight: Option<(Vec<DeliveryFuture>, i64)> = None;
                let mut done = 0;
                while done < per_partition {
                    let mut batch: NativeBatch = Vec::new();
                    let first = queue.recv().await.unwrap();
                    first_record.get_or_init(Instant::now);
                    batch.push((first.offset(), first.key().map(<[u8]>::to_vec), first.payload().map(<[u8]>::to_vec)));
                    drop(first);
                    while batch.len() < 500 {
                        match tokio::time::timeout(Duration::from_millis(5), queue.recv()).await {
                            Ok(Ok(m)) => {
                                batch.push((m.offset(), m.key().map(<[u8]>::to_vec), m.payload().map(<[u8]>::to_vec)))
                            }
                            _ => break,
                        }
                    }
                    if let Some((pending, next)) = in_flight.take() {
                        for delivery in pending {
                            delivery.await.unwrap().unwrap();
                        }
                        store(next);
                    }
                    let mut pending = Vec::with_capacity(batch.len());
                    for (_, key, value) in &batch {
                        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&output);
                        if let Some(k) = key {
                            record = record.key(k);
                        }
                        if let Some(v) = value {
                            record = record.payload(v);
                        }
                        pending.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
                    }
                    let next = batch.last().map_or(0, |(offset, _, _)| offset + 1);
                    done += batch.len();
                    match acks {
                        Acks::Overlapped if done < per_partition => in_flight = Some((pending, next)),
                        _ => {
                            for delivery in pending {
                                delivery.await.unwrap().unwrap();
                            }
                            store(next);
                        }
                    }
                }
            })
        })
        .collect();
    // The partition queues are fed only while the main consumer is polled.
    let poller = {
        let consumer = consumer.clone();
        tokio::spawn(async move {
            loop {
                let _ = tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await;
            }
        })
    };
    for task in tasks {
        task.await.unwrap();
    }
    poller.abort();
    first_record.get().expect("records were received").elapsed()
}

/// A broker the bench runs on.
enum Broker {
    Mock(MockBroker),
    Tansu(TansuBroker),
}

impl Broker {
    fn bootstrap(&self) -> String {
        match self {
            Broker::Mock(b) => b.bootstrap(),
            Broker::Tansu(b) => b.bootstrap(),
        }
    }

    fn create_topic(&self, name: &str, partitions: i32) {
        match self {
            Broker::Mock(b) => b.create_topic(name, partitions),
            Broker::Tansu(b) => b.create_topic(name, partitions),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Broker::Mock(_) => "librdkafka's mock cluster (in process)",
            Broker::Tansu(_) => "tansu (loopback TCP)",
        }
    }
}

/// Native and Sluice on `broker`, `count` records each; returns the Sluice/native ratio.
async fn run_on(broker: &Broker, count: usize) -> f64 {
    let bootstrap = broker.bootstrap();
    let input = format!("bench-in-{}", unique_suffix());
    let (native_out, sluice_out, dlq) =
        (format!("bench-native-{}", unique_suffix()), format!("bench-sluice-{}", unique_suffix()), "bench.dlq");
    broker.create_topic(&input, PARTITIONS);
    broker.create_topic(&native_out, PARTITIONS);
    broker.create_topic(&sluice_out, PARTITIONS);
    broker.create_topic(dlq, 1);
    println!(
        "\nKafka -> passthrough -> Kafka on {}, {count} records of {VALUE_BYTES} B, {PARTITIONS} partitions",
        broker.name()
    );
    let filling = Instant::now();
    fill(&bootstrap, &input, count).await;
    eprintln!("(input written in {:.1} s)", filling.elapsed().as_secs_f64());
    // The mock cluster keeps a bounded log per partition and drops its oldest records past it;
    // both sides would then wait for records that are gone.
    let consumer: StreamConsumer = client_config(&bootstrap).set("group.id", "bench-watermarks").create().unwrap();
    for partition in 0..PARTITIONS {
        let (low, _) = consumer.fetch_watermarks(&input, partition, Duration::from_secs(5)).unwrap();
        assert_eq!(low, 0, "the broker dropped the oldest {low} records of partition {partition}: run fewer records");
    }

    let cpu = cpu_time();
    let native = native_loop(&bootstrap, &input, &native_out, count, Acks::Awaited).await;
    let native_cpu = cpu_time() - cpu;
    let overlapped_out = format!("bench-native-overlapped-{}", unique_suffix());
    broker.create_topic(&overlapped_out, PARTITIONS);
    let cpu = cpu_time();
    let overlapped = native_loop(&bootstrap, &input, &overlapped_out, count, Acks::Overlapped).await;
    let overlapped_cpu = cpu_time() - cpu;

    let engine = engine();
    let module = load(&engine, "passthrough");
    let spec = PipelineSpec {
        name: format!("bench-{}", unique_suffix()),
        inputs: vec![input.clone()],
        outputs: BTreeMap::from([("default".to_string(), sluice_out.clone())]),
        module: module.digest().clone(),
        cache: Default::default(),
        namespace: None,
        config: BTreeMap::new(),
        processing: Processing { dead_letter_topic: Some(dlq.into()), linger_ms: 5, ..Processing::default() },
        group: Default::default(),
    };
    let cache = Cache::new(Arc::new(MemoryCache::new()), Namespace::new("bench").unwrap());
    let pipeline = Pipeline::start(spec, &KafkaConfig::new(&bootstrap), &engine, module, cache).await.unwrap();
    // Timed from the first batch, leaving the consumer group join out as the native loop's
    // start-up is.
    while pipeline.status().records_in == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let started = Instant::now();
    let cpu = cpu_time();
    // Ended, as the native loops are, at the last acknowledgement: the pipeline counts its
    // outputs once the broker has acknowledged them.
    while pipeline.status().records_out < count as u64 {
        assert!(started.elapsed() < Duration::from_secs(600), "the pipeline did not produce {count} outputs");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let sluice = started.elapsed();
    let sluice_cpu = cpu_time() - cpu;
    let status = pipeline.status();
    let latency = &status.batch_latency;
    println!(
        "sluice: {} batches, {:.0} records per batch, {:.1} ms per batch from fetched to acknowledged",
        status.batches,
        status.records_in as f64 / status.batches.max(1) as f64,
        latency.total_nanos as f64 / latency.count.max(1) as f64 / 1e6
    );
    pipeline.stop().await;

    let rate = |d: Duration| count as f64 / d.as_secs_f64();
    let row = |name: &str, d: Duration, cpu: Duration| {
        let per_record = cpu.as_secs_f64() * 1e6 / count as f64;
        println!("{name:<46} {:>8.2} {:>10.0} {:>14.1}", d.as_secs_f64(), rate(d), per_record)
    };
    println!("{:<46} {:>8} {:>10} {:>14}", "", "seconds", "records/s", "CPU µs/record");
    row("native, a task per partition, acks awaited", native, native_cpu);
    row("native, a task per partition, acks overlapped", overlapped, overlapped_cpu);
    row("sluice pipeline (wasm passthrough)", sluice, sluice_cpu);
    let ratio = rate(sluice) / rate(overlapped);
    println!(
        "sluice/native throughput ratio: {ratio:.2} against the overlapped loop (Sluice's own scheme), {:.2} against \
         the awaiting one (each timed from its first record to its last acknowledged output)",
        rate(sluice) / rate(native)
    );
    ratio
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::var_os("SLUICE_BENCH_QUICK").is_some();
    let count: usize = if quick { 20_000 } else { 200_000 };
    let only = std::env::var("SLUICE_BENCH_BROKER").unwrap_or_default();
    if only.is_empty() || only == "mock" {
        let records = std::env::var("SLUICE_BENCH_MOCK_RECORDS").ok().and_then(|n| n.parse().ok());
        run_on(&Broker::Mock(MockBroker::start()), records.unwrap_or(MOCK_RECORDS)).await;
    }
    if only.is_empty() || only == "tansu" {
        run_on(&Broker::Tansu(TansuBroker::start()), count).await;
    }
}
