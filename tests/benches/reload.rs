//! Hot reload on a live pipeline (a real broker, tansu on loopback, 4 partitions under a
//! steady load): the time from handing the runtime a new module to the first output of the new
//! version, for a small component (~75 KiB) and a large one (~1.3 MiB), each a first upload
//! (compiled) and a rollback (already compiled); and the pause a partition sees during the
//! swap (preparing an instance of the new module, as each worker reports it).
//!
//! `cargo bench -p sluice-tests --bench reload` (or `make bench`). `SLUICE_BENCH_QUICK=1` for
//! one round.

/// The allocator the `sluice` binary ships with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use sluice::kafka::KafkaConfig;
use sluice::manager::{ManagerConfig, PipelineManager};
use sluice::pipeline::spec::{PipelineSpec, Processing};
use sluice_tests::guests;
use sluice_tests::kafka::{TansuBroker, client_config, unique_suffix};

const PARTITIONS: i32 = 4;
/// Records per second fed to the input while reloads happen.
const RATE: u64 = 1_000;

/// Feeds the input at [`RATE`] until `stop`.
fn feed(bootstrap: String, topic: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let producer: FutureProducer = client_config(&bootstrap).set("linger.ms", "20").create().unwrap();
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut n: u64 = 0;
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            for _ in 0..RATE / 100 {
                let key = n.to_string();
                let record = FutureRecord::to(&topic)
                    .key(&key)
                    .payload("a record of the steady load")
                    .partition((n % PARTITIONS as u64) as i32);
                let _ = producer.send_result(record);
                n += 1;
            }
        }
    })
}

/// A consumer of the output topic from its current end.
fn watch(bootstrap: &str, topic: &str) -> StreamConsumer {
    let consumer: StreamConsumer = client_config(bootstrap)
        .set("group.id", format!("bench-watch-{}", unique_suffix()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        list.add_partition_offset(topic, p, Offset::End).unwrap();
    }
    consumer.assign(&list).unwrap();
    consumer
}

/// Which version made an output: `v1:`/`v2:` values from the tagged guests, `large` for the
/// outputs carrying the large guest's header.
fn version(message: &rdkafka::message::BorrowedMessage<'_>) -> String {
    let large = message.headers().is_some_and(|h| h.iter().any(|h| h.key == "sluice.test.mix"));
    if large {
        return "large".into();
    }
    let value = message.payload().map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default();
    value.split(':').next().unwrap_or_default().to_string()
}

struct Measured {
    store: Duration,
    all_switched: Duration,
    to_first_output: Duration,
    max_swap_pause: Duration,
}

/// Swaps the pipeline to `bytes` and waits for an output tagged `expect`.
async fn swap(manager: &PipelineManager, name: &str, outputs: &StreamConsumer, bytes: Bytes, expect: &str) -> Measured {
    // Drain what is already there, so the first output of the new version is seen promptly.
    while tokio::time::timeout(Duration::from_millis(1), outputs.recv()).await.is_ok() {}
    let started = Instant::now();
    let stored = manager.store_module(bytes).await.expect("store module");
    let store = started.elapsed();
    manager.reload(name, &stored.info.digest).await.expect("reload");
    // Every partition switches at its next batch boundary; poll what the workers report.
    let mut max_swap_pause = Duration::ZERO;
    let all_switched = loop {
        let status = manager.get_status(name).await.unwrap();
        let switched: Vec<_> = status
            .partitions
            .iter()
            .filter(|p| p.module.as_deref() == Some(stored.info.digest.as_str()))
            .filter_map(|p| p.last_switch)
            .collect();
        if switched.len() == PARTITIONS as usize {
            for s in switched {
                max_swap_pause = max_swap_pause.max(Duration::from_micros(s.micros));
            }
            break started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let to_first_output = loop {
        match tokio::time::timeout(Duration::from_secs(60), outputs.recv()).await {
            Ok(Ok(message)) if version(&message) == expect => break started.elapsed(),
            Ok(_) => {}
            Err(_) => panic!("no output of {expect} within 60 s (the broker stalled?)"),
        }
    };
    Measured { store, all_switched, to_first_output, max_swap_pause }
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let quick = std::env::var("SLUICE_BENCH_QUICK").is_ok();
    let rounds = if quick { 1 } else { 3 };
    let broker = TansuBroker::start();
    let bootstrap = broker.bootstrap();
    let id = unique_suffix();
    let (input, output) = (format!("reload-in-{id}"), format!("reload-out-{id}"));
    broker.create_topic(&input, PARTITIONS);
    broker.create_topic(&output, PARTITIONS);
    broker.create_topic(&format!("reload-{id}.dlq"), 1);

    let component = |name: &str| Bytes::from(guests::component_bytes(name));
    let (v1, v2, large) = (component("tagged-v1"), component("tagged-v2"), component("large"));
    println!(
        "hot reload on a live pipeline: {PARTITIONS} partitions, {RATE} records/s, tansu on loopback; \
         small component {} KiB, large component {} KiB",
        v2.len() / 1024,
        large.len() / 1024
    );
    println!(
        "| swap | round | store (compile) ms | upload -> all partitions switched ms | upload -> first new output read back ms | longest partition pause ms |"
    );
    println!("|---|---|---|---|---|---|");
    for round in 1..=rounds {
        // A fresh data directory each round, so first uploads really compile.
        let data = tempfile::tempdir().unwrap();
        let manager =
            PipelineManager::open(ManagerConfig::new(data.path(), KafkaConfig::new(bootstrap.clone()))).await.unwrap();
        let name = format!("reload-{id}");
        let stored = manager.store_module(v1.clone()).await.unwrap();
        let spec = PipelineSpec {
            name: name.clone(),
            inputs: vec![input.clone()],
            outputs: BTreeMap::from([("default".to_string(), output.clone())]),
            module: stored.info.digest.parse().expect("the registry's digests are digests"),
            cache: Default::default(),
            namespace: None,
            config: BTreeMap::new(),
            processing: Processing { linger_ms: 5, ..Processing::default() },
            group: Default::default(),
        };
        manager.apply(spec).await.unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let feeder = feed(bootstrap.clone(), input.clone(), stop.clone());
        let outputs = watch(&bootstrap, &output);
        // Let the pipeline join its group and reach a steady state.
        loop {
            let message = tokio::time::timeout(Duration::from_secs(60), outputs.recv()).await.unwrap().unwrap();
            if version(&message) == "v1" {
                break;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (label, bytes, expect) in [
            ("small: v1 -> v2 (first upload)", v2.clone(), "v2"),
            ("small: v2 -> v1 (already compiled)", v1.clone(), "v1"),
            ("large: v1 -> large (first upload)", large.clone(), "large"),
            ("large: large -> v1 (already compiled)", v1.clone(), "v1"),
            ("large: v1 -> large (already compiled)", large.clone(), "large"),
        ] {
            let m = swap(&manager, &name, &outputs, bytes, expect).await;
            println!(
                "| {label} | {round} | {} | {} | {} | {} |",
                ms(m.store),
                ms(m.all_switched),
                ms(m.to_first_output),
                ms(m.max_swap_pause)
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        stop.store(true, Ordering::Relaxed);
        feeder.await.unwrap();
        manager.delete(&name).await.unwrap();
        manager.shutdown().await;
    }
    println!(
        "store: upload handed to the registry until stored (checked and compiled, or found stored). \
         switched: from the same start until every partition's worker runs the new module (each \
         switches when its batch in flight, produce acknowledgements included, is done). first \
         output: until the first output of the new version is read back from the broker. pause: \
         the longest time a partition spent preparing the new instance at its switch."
    );
}
