//! Kafka -> function -> Kafka throughput on a real broker (tansu on loopback): a Sluice
//! pipeline running the `passthrough` guest, beside a hand-written native Rust consumer that
//! does the same work with the same guarantee (produce, await acknowledgements, then store
//! offsets), on the same broker in the same run.
//!
//! `cargo bench -p sluice-tests --bench kafka` (or `make bench`). `SLUICE_BENCH_QUICK=1` for a
//! short run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use sluice::cache::{Cache, MemoryCache, Namespace};
use sluice::kafka::KafkaConfig;
use sluice::pipeline::Pipeline;
use sluice::pipeline::spec::{PipelineSpec, Processing};
use sluice_tests::fixtures::{engine, load};
use sluice_tests::kafka::{TansuBroker, client_config, unique_suffix};

const PARTITIONS: i32 = 4;
const VALUE_BYTES: usize = 100;

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

/// Waits until `topic` holds `count` records (sum of high watermarks).
async fn wait_for_count(bootstrap: &str, topic: &str, count: i64, timeout: Duration) -> Duration {
    let consumer: StreamConsumer = client_config(bootstrap).set("group.id", "bench-watermarks").create().unwrap();
    let started = Instant::now();
    loop {
        let mut total = 0;
        for p in 0..PARTITIONS {
            if let Ok((low, high)) = consumer.fetch_watermarks(topic, p, Duration::from_secs(5)) {
                total += high - low;
            }
        }
        if total >= count || started.elapsed() > timeout {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The native baseline: one consumer, batches of up to 500 records, produce each record,
/// await every acknowledgement, then store the offsets; until `count` records are done.
async fn native_loop(bootstrap: &str, input: &str, output: &str, count: usize) {
    let consumer: StreamConsumer = client_config(bootstrap)
        .set("group.id", format!("native-{}", unique_suffix()))
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[input]).unwrap();
    let producer: FutureProducer =
        client_config(bootstrap).set("enable.idempotence", "true").set("linger.ms", "5").create().unwrap();
    let mut done = 0;
    while done < count {
        let mut batch = Vec::new();
        let first = consumer.recv().await.unwrap();
        batch.push((
            first.partition(),
            first.offset(),
            first.key().map(<[u8]>::to_vec),
            first.payload().map(<[u8]>::to_vec),
        ));
        drop(first);
        while batch.len() < 500 {
            match tokio::time::timeout(Duration::from_millis(5), consumer.recv()).await {
                Ok(Ok(m)) => batch.push((
                    m.partition(),
                    m.offset(),
                    m.key().map(<[u8]>::to_vec),
                    m.payload().map(<[u8]>::to_vec),
                )),
                _ => break,
            }
        }
        let mut pending = Vec::with_capacity(batch.len());
        for (_, _, key, value) in &batch {
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(output);
            if let Some(k) = key {
                record = record.key(k);
            }
            if let Some(v) = value {
                record = record.payload(v);
            }
            pending.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
        }
        for delivery in pending {
            delivery.await.unwrap().unwrap();
        }
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        for (partition, offset, _, _) in &batch {
            next.insert(*partition, offset + 1);
        }
        let mut list = TopicPartitionList::new();
        for (partition, offset) in next {
            list.add_partition_offset(input, partition, Offset::Offset(offset)).unwrap();
        }
        consumer.store_offsets(&list).unwrap();
        done += batch.len();
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::var_os("SLUICE_BENCH_QUICK").is_some();
    let count: usize = if quick { 20_000 } else { 200_000 };
    let broker = TansuBroker::start();
    let bootstrap = broker.bootstrap();
    let input = format!("bench-in-{}", unique_suffix());
    broker.create_topic(&input, PARTITIONS);
    let (native_out, sluice_out, dlq) = ("bench-native-out", "bench-sluice-out", "bench.dlq");
    for topic in [native_out, sluice_out] {
        broker.create_topic(topic, PARTITIONS);
    }
    broker.create_topic(dlq, 1);
    println!(
        "Kafka -> passthrough -> Kafka on tansu (loopback), {count} records of {VALUE_BYTES} B, {PARTITIONS} partitions"
    );
    fill(&bootstrap, &input, count).await;

    let started = Instant::now();
    native_loop(&bootstrap, &input, native_out, count).await;
    let native = started.elapsed();

    let engine = engine();
    let module = load(&engine, "passthrough");
    let spec = PipelineSpec {
        name: format!("bench-{}", unique_suffix()),
        inputs: vec![input.clone()],
        outputs: BTreeMap::from([("default".to_string(), sluice_out.to_string())]),
        module: module.digest().clone(),
        cache: Default::default(),
        namespace: None,
        config: BTreeMap::new(),
        processing: Processing { dead_letter_topic: Some(dlq.into()), ..Processing::default() },
        group: Default::default(),
    };
    let cache = Cache::new(Arc::new(MemoryCache::new()), Namespace::new("bench").unwrap());
    let started = Instant::now();
    let pipeline = Pipeline::start(spec, &KafkaConfig::new(&bootstrap), &engine, module, cache).await.unwrap();
    let waited = wait_for_count(&bootstrap, sluice_out, count as i64, Duration::from_secs(600)).await;
    let sluice = started.elapsed().max(waited);
    pipeline.stop().await;

    let rate = |d: Duration| count as f64 / d.as_secs_f64();
    println!("{:<28} {:>10} {:>12}", "", "seconds", "records/s");
    println!("{:<28} {:>10.2} {:>12.0}", "native consume-produce loop", native.as_secs_f64(), rate(native));
    println!("{:<28} {:>10.2} {:>12.0}", "sluice pipeline (wasm)", sluice.as_secs_f64(), rate(sluice));
    println!("sluice/native throughput ratio: {:.2} (includes the pipeline's group join)", rate(sluice) / rate(native));
}
