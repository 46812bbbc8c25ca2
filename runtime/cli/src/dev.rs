//! `sluice dev`: everything on the embedded defaults, for a first look. It starts a Kafka
//! mock cluster inside the process (on loopback, so other clients can connect too), creates
//! the demo topics, deploys a function as the pipeline `demo` on the in-memory cache, feeds
//! it a synthetic stream, serves the admin API (so `sluice deploy`, `reload` and `rollback`
//! work against it, creating missing topics on the fly) and prints live results: counters,
//! throughput and the latest outputs.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::serve::{AdminSettings, serve_admin, shutdown_signal};
use sluice_kafka::KafkaConfig;
use sluice_pipeline::cluster::ClusterConfig;
use sluice_pipeline::manager::{ManagerConfig, PipelineManager, TopicCreator};
use sluice_pipeline::spec::{PipelineSpec, Processing};

/// The demo's input topic.
pub const INPUT_TOPIC: &str = "sentences";
/// The demo's output topic.
pub const OUTPUT_TOPIC: &str = "word-counts";

/// Settings of the demo.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// The function; the `word-count` example by default.
    pub module: PathBuf,
    /// Records per second fed to the input topic.
    pub rate: u32,
    /// Partitions of the input topic.
    pub partitions: i32,
    /// Stop after this long; run until Ctrl-C when `None`.
    pub duration: Option<Duration>,
    /// The admin API's address.
    pub admin_listen: std::net::SocketAddr,
    /// Where modules and pipelines are kept; a fresh temporary folder (removed at exit) when
    /// `None`.
    pub data_dir: Option<PathBuf>,
}

/// Words of the synthetic stream, the first ones far more frequent (a Zipf-like skew).
const WORDS: [&str; 24] = [
    "the",
    "stream",
    "of",
    "records",
    "flows",
    "through",
    "a",
    "sluice",
    "and",
    "every",
    "function",
    "counts",
    "words",
    "in",
    "order",
    "per",
    "partition",
    "while",
    "cache",
    "keeps",
    "state",
    "kafka",
    "wasm",
    "fast",
];

struct Sentences(u64);

impl Sentences {
    fn next(&mut self) -> String {
        let mut words = Vec::new();
        for _ in 0..6 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            // Squaring a uniform draw favours small indexes.
            let u = (self.0 % 10_000) as f64 / 10_000.0;
            words.push(WORDS[((u * u) * WORDS.len() as f64) as usize]);
        }
        words.join(" ")
    }
}

/// The embedded cluster, on a thread of its own (librdkafka's mock cluster handle cannot
/// move between threads), creating topics on request until dropped.
type TopicRequest = (String, i32, std::sync::mpsc::Sender<anyhow::Result<()>>);

struct EmbeddedCluster {
    brokers: String,
    /// Partitions of the topics it creates for pipelines.
    partitions: i32,
    /// Topics to create, each with where to answer; `None` stops the thread.
    requests: std::sync::mpsc::Sender<Option<TopicRequest>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EmbeddedCluster {
    fn start(partitions: i32) -> anyhow::Result<EmbeddedCluster> {
        let (requests, incoming) = std::sync::mpsc::channel::<Option<TopicRequest>>();
        let (ready, started) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new().name("sluice-dev-kafka".into()).spawn(move || {
            let cluster = match MockCluster::new(1) {
                Ok(cluster) => cluster,
                Err(e) => {
                    let _ = ready.send(Err(anyhow::anyhow!("cannot start the embedded Kafka mock cluster: {e}")));
                    return;
                }
            };
            let _ = ready.send(Ok(cluster.bootstrap_servers()));
            for (topic, count, reply) in incoming.iter().map_while(|request| request) {
                let _ = reply.send(cluster.create_topic(&topic, count, 1).map_err(anyhow::Error::from));
            }
        })?;
        let brokers = started.recv().context("the embedded Kafka thread ended")??;
        Ok(EmbeddedCluster { brokers, partitions, requests, thread: Some(thread) })
    }

    fn creator(&self) -> TopicCreator {
        self.creator_with(self.partitions)
    }

    /// Creates topics of `partitions` partitions.
    fn creator_with(&self, partitions: i32) -> TopicCreator {
        let requests = std::sync::Mutex::new(self.requests.clone());
        Arc::new(move |topic: &str| {
            let (reply, answer) = std::sync::mpsc::channel();
            requests
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .send(Some((topic.to_string(), partitions, reply)))
                .map_err(|_| anyhow::anyhow!("the embedded Kafka cluster is stopped"))?;
            answer.recv().map_err(|_| anyhow::anyhow!("the embedded Kafka cluster is stopped"))?
        })
    }

    fn create_topic(&self, topic: &str) -> anyhow::Result<()> {
        (self.creator())(topic)
    }
}

impl Drop for EmbeddedCluster {
    fn drop(&mut self) {
        // The thread drops the cluster as it ends.
        let _ = self.requests.send(None);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Prints one line of the demo; `false` when stdout's reader is gone (the demo then stops at
/// its next tick, cleanly, instead of panicking).
fn say(line: std::fmt::Arguments<'_>) -> bool {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}").and_then(|()| stdout.flush()).is_ok()
}

/// Runs the demo until Ctrl-C or the end of `options.duration`.
pub async fn run(options: DevOptions) -> anyhow::Result<()> {
    let cluster = EmbeddedCluster::start(options.partitions)?;
    for topic in [INPUT_TOPIC, OUTPUT_TOPIC, "demo.dlq"] {
        cluster.create_topic(topic)?;
    }
    let brokers = cluster.brokers.clone();
    say(format_args!("embedded Kafka (mock cluster) at {brokers}; topics {INPUT_TOPIC} -> {OUTPUT_TOPIC}"));

    let kafka = KafkaConfig::new(brokers.clone());
    let (data_dir, temporary) = match &options.data_dir {
        Some(dir) => (dir.clone(), false),
        None => (std::env::temp_dir().join(format!("sluice-dev-{}", std::process::id())), true),
    };
    // The registry in Kafka, as `sluice serve` keeps it: the mock cluster cannot create topics
    // through the Kafka protocol, so its control topics (one partition each) are made here.
    let registry = ClusterConfig::default();
    for topic in [&registry.registry_topic, &registry.modules_topic, &registry.status_topic] {
        (cluster.creator_with(1))(topic)?;
    }
    let manager = PipelineManager::open(ManagerConfig {
        create_topics: Some(cluster.creator()),
        cluster: Some(registry),
        ..ManagerConfig::new(&data_dir, kafka.clone())
    })
    .await?;
    let bytes = std::fs::read(&options.module).with_context(|| {
        format!("cannot read {}: run `make examples` to build the example functions", options.module.display())
    })?;
    let stored = manager.store_module(bytes.into()).await?;
    let compile_time = stored.module.as_ref().map(|m| m.compile_time());
    say(format_args!(
        "function {} ({}, {} KiB{})",
        options.module.display(),
        &stored.info.digest[..19],
        stored.info.size / 1024,
        compile_time.map(|t| format!(", compiled in {t:?}")).unwrap_or_default()
    ));
    let spec = PipelineSpec {
        name: "demo".into(),
        inputs: vec![INPUT_TOPIC.into()],
        outputs: BTreeMap::from([("default".to_string(), OUTPUT_TOPIC.to_string())]),
        module: stored.info.digest.parse()?,
        cache: Default::default(),
        namespace: None,
        config: BTreeMap::new(),
        processing: Processing::default(),
        group: Default::default(),
    };
    manager.apply(spec).await?;

    let admin = AdminSettings { listen: options.admin_listen, ..AdminSettings::default() };
    let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let admin_task = tokio::spawn(serve_admin(manager.clone(), admin, async move {
        let _ = admin_stopped.await;
    }));
    say(format_args!(
        "admin API on http://{0} — open http://{0}/ui for the web console, or try `sluice ls`, `sluice status demo`, `sluice reload demo <module.wasm>`, `sluice rollback demo`",
        options.admin_listen
    ));

    let feeder = tokio::spawn(feed(kafka.clone(), options.rate));
    let outputs = watch_outputs(&kafka, options.partitions)?;
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut latest: HashMap<String, i64> = HashMap::new();
    let mut last = (0u64, 0u64, Instant::now());
    let signal = shutdown_signal()?;
    let duration = options.duration;
    let stop = async move {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => signal.await,
        }
    };
    tokio::pin!(stop);
    say(format_args!("feeding {} records/s; press Ctrl-C to stop", options.rate));
    loop {
        tokio::select! {
            _ = &mut stop => break,
            message = outputs.recv() => {
                if let Ok(message) = message {
                    let word = message.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default();
                    let count = message.payload().and_then(|v| std::str::from_utf8(v).ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
                    let entry = latest.entry(word).or_insert(0);
                    *entry = (*entry).max(count);
                }
            }
            _ = ticker.tick() => {
                let Ok(status) = manager.get_status("demo").await else { continue };
                let seconds = last.2.elapsed().as_secs_f64().max(0.001);
                let rate_in = (status.records_in - last.0) as f64 / seconds;
                let rate_out = (status.records_out - last.1) as f64 / seconds;
                last = (status.records_in, status.records_out, Instant::now());
                let mut top: Vec<_> = latest.iter().collect();
                top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
                let top: Vec<String> = top.iter().take(6).map(|(w, n)| format!("{w}={n}")).collect();
                let shown = say(format_args!(
                    "[{:>4}s] in {:>8}  out {:>9}  failed {}  | {:>7.0} rec/s in {:>8.0} out/s | top: {}",
                    started.elapsed().as_secs(), status.records_in, status.records_out, status.failed,
                    rate_in, rate_out, top.join(" ")
                ));
                if !shown {
                    // Nobody reads the demo's output any more (`sluice dev | head`): stop it.
                    break;
                }
            }
        }
    }
    // Stop every client before the cluster they talk to.
    let _ = admin_stop.send(());
    let admin_result = admin_task.await;
    feeder.abort();
    let _ = feeder.await;
    drop(outputs);
    manager.shutdown().await;
    drop(manager);
    drop(cluster);
    if temporary {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    match admin_result {
        Ok(Err(e)) => Err(e),
        _ => Ok(()),
    }
}

/// Produces synthetic sentences at `rate` records per second, forever.
async fn feed(kafka: KafkaConfig, rate: u32) -> anyhow::Result<()> {
    let producer: FutureProducer = kafka.client_config().set("linger.ms", "5").create()?;
    let mut sentences = Sentences(0x9e37_79b9_7f4a_7c15);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let per_tick = (rate / 10).max(1);
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        for _ in 0..per_tick {
            let key = format!("line-{n}");
            let value = sentences.next();
            n += 1;
            let record = FutureRecord::to(INPUT_TOPIC).key(&key).payload(&value);
            if let Err((e, _)) = producer.send_result(record) {
                tracing::warn!("demo feeder: {e}");
            }
        }
    }
}

/// A consumer of every partition of the output topic, from the beginning.
fn watch_outputs(kafka: &KafkaConfig, partitions: i32) -> anyhow::Result<StreamConsumer> {
    let consumer: StreamConsumer =
        kafka.client_config().set("group.id", "sluice-dev-watcher").set("enable.auto.commit", "false").create()?;
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(OUTPUT_TOPIC, p, Offset::Beginning)?;
    }
    consumer.assign(&list)?;
    Ok(consumer)
}
