//! Cluster mode's control plane: how long a deploy and a reload take to reach every node of a
//! cluster of three `sluice serve` processes on one broker (tansu on loopback, a
//! 6-partition input), beside the same deploy and reload on one `sluice serve` outside cluster
//! mode (its registry on disk), measured in the same run.
//!
//! - deploy: from `POST /v1/deploy` through node 1 (a new pipeline, with the `passthrough`
//!   module uploaded again: it is stored and compiled on every node by a first deploy that is
//!   not measured) until every node's report shows the pipeline running on the revision the
//!   deploy answered; and until its partitions are split over the nodes. The pipeline is
//!   deleted after each round; each round has a new name.
//! - reload: with a steady load on the input, from `POST /v1/pipelines/NAME/reload` through node
//!   2 to a stored module (`tagged-v1` and `tagged-v2` in turn, both switched to once before, so
//!   compiled on every node) until every owned partition of every node runs the new revision
//!   and has processed a batch with it. Then, from the outputs' timestamps: the longest gap
//!   between two consecutive outputs of one input partition across a switch, beside the
//!   longest gap away from the switches.
//!
//! Every node's `GET /v1/pipelines/NAME` is asked every [`EVERY`]. `cargo bench -p sluice-tests
//! --bench cluster` (or `make bench`); `SLUICE_BENCH_QUICK=1` for two rounds. Runs `target/
//! release/sluice` (`make build`), or the binary `SLUICE_BINARY` names.

/// The allocator the `sluice` binary ships with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use sluice::api::{PipelineReport, PipelineState};
use sluice_tests::cluster::{
    Cluster, PARTITIONS, WAIT, all_owned_run, api, deploy, input_id, split_over_nodes, upload, wait_for_pipeline,
};
use sluice_tests::guests;
use sluice_tests::kafka::{client_config, unique_suffix};

/// Measured rounds of each of the deploy and the reload.
const ROUNDS: usize = 10;
/// Nodes of the cluster.
const NODES: usize = 3;
/// How often every node's report is asked while waiting.
const EVERY: Duration = Duration::from_millis(10);
/// Records per second fed to the input during the reloads (tansu chokes above about 1,000/s
/// of records with headers, and the outputs here carry one).
const RATE: u64 = 300;
/// The load between two reloads, so that each switch has outputs on both sides.
const BETWEEN_RELOADS: Duration = Duration::from_millis(500);
/// The goal of issue 11 for a small module once compiled.
const GOAL: Duration = Duration::from_secs(1);

/// What one setup (the cluster or the single node) measured.
struct Figures {
    /// Until the deploy call answered.
    deploy_answered: Vec<Duration>,
    /// Until every node reports the pipeline running on the new revision.
    deploy_running: Vec<Duration>,
    /// Until the partitions are split over the nodes (owned by exactly one node each).
    deploy_owned: Vec<Duration>,
    /// Until the reload call answered.
    reload_answered: Vec<Duration>,
    /// Until every owned partition of every node has processed a batch with the new module.
    reload_switched: Vec<Duration>,
    /// The longest instance preparation any partition reported at a switch, per reload.
    reload_prepare: Vec<Duration>,
    /// The outputs' gaps, from their timestamps.
    gaps: Gaps,
    /// Time to ask every node for its report once.
    poll: Vec<Duration>,
}

/// Gaps between consecutive outputs of one input partition (in input offset order).
#[derive(Default)]
struct Gaps {
    /// The longest gap across each switch (over the partitions), one per switch.
    at_switch: Vec<Duration>,
    /// The longest gap between two outputs of the same version.
    elsewhere: Duration,
    /// The median gap between two outputs of the same version not produced in the same
    /// millisecond (in practice: between two batches).
    typical: Duration,
    /// Switches seen in the outputs, over every partition.
    switches: usize,
}

/// Every node's reports of `name`, once `check` holds for all of them, asking every [`EVERY`].
async fn wait(cluster: &Cluster, name: &str, what: &str, check: impl Fn(&[PipelineReport]) -> bool) {
    wait_for_pipeline(cluster, name, EVERY, what, check).await;
}

async fn measure_deploys(cluster: &Cluster, rounds: usize, figures: &mut Figures) {
    let id = unique_suffix();
    // Not measured: stores and compiles the module on every node.
    let warm = format!("warm-{id}");
    deploy(&cluster.url(0), cluster.spec_named(&warm), "passthrough").await;
    wait(cluster, &warm, "the first deploy running everywhere", |r| {
        r.iter().all(|r| r.state == PipelineState::Running)
    })
    .await;
    delete(cluster, &warm).await;

    for round in 0..rounds {
        let name = format!("deploy-{round}-{id}");
        let (spec, module) = (cluster.spec_named(&name), guests::component("passthrough"));
        let started = Instant::now();
        let answer = api(&cluster.url(0), move |c| c.deploy(&spec, &module, &mut |_, _| {})).await.expect("deploy");
        figures.deploy_answered.push(started.elapsed());
        let (digest, revision) = (answer.pipeline.module, answer.pipeline.revision);
        wait(cluster, &name, "every node running the new pipeline", |reports| {
            reports.iter().all(|r| {
                r.state == PipelineState::Running && r.revision == revision && r.spec.module.as_str() == digest
            })
        })
        .await;
        figures.deploy_running.push(started.elapsed());
        wait(cluster, &name, "the new pipeline's partitions split over the nodes", split_over_nodes).await;
        figures.deploy_owned.push(started.elapsed());
        delete(cluster, &name).await;
    }
}

/// Deletes `name` through node 1 and waits until no node has it.
async fn delete(cluster: &Cluster, name: &str) {
    let owned_name = name.to_string();
    api(&cluster.url(0), move |c| c.delete_pipeline(&owned_name)).await.expect("delete");
    let deadline = Instant::now() + WAIT;
    while cluster.reports(name).await.iter().any(Option::is_some) {
        assert!(Instant::now() < deadline, "pipeline {name} still on some node after its delete");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn measure_reloads(cluster: &Cluster, rounds: usize, figures: &mut Figures) {
    let name = cluster.name();
    let through = if cluster.running().len() > 1 { 1 } else { 0 };
    let v1 = deploy(&cluster.url(0), cluster.spec(), "tagged-v1").await;
    let v2 = upload(&cluster.url(0), "tagged-v2").await;
    let produced = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = feed(cluster.broker.bootstrap(), cluster.input.clone(), produced.clone(), stop.clone());
    let outputs = Arc::new(Mutex::new(Vec::new()));
    let watcher = watch(cluster.broker.bootstrap(), cluster.output.clone(), outputs.clone());
    wait(cluster, &name, "v1 on every partition", |r| all_owned_run(r, &v1)).await;

    let mut measured_from = i64::MAX;
    // Two switches not measured, so that both modules are compiled on every node; then the
    // measured ones, alternating.
    for (round, target) in [&v2, &v1].into_iter().chain([&v2, &v1].into_iter().cycle().take(rounds)).enumerate() {
        let measured = round >= 2;
        if round == 2 {
            measured_from = now_ms();
        }
        tokio::time::sleep(BETWEEN_RELOADS).await;
        let (url, pipeline, module) = (cluster.url(through), name.clone(), target.clone());
        let started = Instant::now();
        let change = api(&url, move |c| c.reload_stored(&pipeline, &module)).await.expect("reload");
        let revision = change.pipeline.revision;
        let answered = started.elapsed();
        let reports = wait_for_pipeline(cluster, &name, EVERY, "the new module on every partition", |reports| {
            all_owned_run(reports, target)
                && reports
                    .iter()
                    .flat_map(|r| &r.status.partitions)
                    .filter(|p| p.owned)
                    .all(|p| p.revision == Some(revision))
        })
        .await;
        let elapsed = started.elapsed();
        let mut prepare = Duration::ZERO;
        for partition in reports.iter().flat_map(|r| &r.status.partitions).filter(|p| p.owned) {
            prepare = prepare.max(Duration::from_micros(partition.last_switch.map_or(0, |s| s.micros)));
        }
        if measured {
            figures.reload_answered.push(answered);
            figures.reload_switched.push(elapsed);
            figures.reload_prepare.push(prepare);
        }
    }
    tokio::time::sleep(BETWEEN_RELOADS).await;

    // Asks every node once, a few times, for the resolution of the figures above.
    for _ in 0..20 {
        let started = Instant::now();
        cluster.reports(&name).await;
        figures.poll.push(started.elapsed());
    }

    stop.store(true, Ordering::Relaxed);
    feeder.await.unwrap();
    let produced = produced.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(60);
    while outputs.lock().unwrap().len() < produced && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let outputs = std::mem::take(&mut *outputs.lock().unwrap());
    watcher.abort();
    if outputs.len() < produced {
        println!("(only {} of {produced} outputs read back within 60 s: the gaps are from those)", outputs.len());
    }
    figures.gaps = gaps(&outputs, measured_from);
    api(&cluster.url(0), move |c| c.delete_pipeline(&name)).await.expect("delete");
}

/// Feeds the input at [`RATE`], record `n` (`id-n`, key `n`) on partition `n % PARTITIONS`,
/// until `stop`; `produced` counts the records handed to the producer.
fn feed(
    bootstrap: String,
    topic: String,
    produced: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let producer: FutureProducer = client_config(&bootstrap).set("linger.ms", "5").create().unwrap();
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            for _ in 0..RATE / 100 {
                let n = produced.load(Ordering::Relaxed);
                let (key, value) = (n.to_string(), format!("id-{n}"));
                let record =
                    FutureRecord::to(&topic).key(&key).payload(&value).partition((n % PARTITIONS as usize) as i32);
                if producer.send_result(record).is_ok() {
                    produced.store(n + 1, Ordering::Relaxed);
                }
            }
        }
    })
}

/// One output of a tagged guest: which input it came from, which version made it, and when
/// it was produced.
struct Output {
    partition: i32,
    offset: i64,
    tag: String,
    timestamp_ms: i64,
}

/// Reads the output topic from the beginning into `outputs` until aborted.
fn watch(bootstrap: String, topic: String, outputs: Arc<Mutex<Vec<Output>>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let consumer: StreamConsumer = client_config(&bootstrap)
            .set("group.id", format!("bench-watch-{}", unique_suffix()))
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut list = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            list.add_partition_offset(&topic, p, Offset::Beginning).unwrap();
        }
        consumer.assign(&list).unwrap();
        loop {
            let Ok(message) = consumer.recv().await else { continue };
            let value = String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
            let Some((tag, _)) = value.split_once(':') else { continue };
            let offset = message
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == "sluice.test.offset").and_then(|h| h.value))
                .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok());
            let (Some(offset), Some(timestamp_ms)) = (offset, message.timestamp().to_millis()) else { continue };
            let partition = (input_id(&value) % PARTITIONS as usize) as i32;
            outputs.lock().unwrap().push(Output { partition, offset, tag: tag.to_string(), timestamp_ms });
        }
    })
}

/// The gaps between consecutive outputs of each input partition from `from_ms` on, across a
/// switch of version and elsewhere. The n-th switch of every partition is the n-th reload.
fn gaps(outputs: &[Output], from_ms: i64) -> Gaps {
    let mut by_partition: BTreeMap<i32, BTreeMap<i64, &Output>> = BTreeMap::new();
    for output in outputs {
        // A replayed input keeps its first output.
        by_partition.entry(output.partition).or_default().entry(output.offset).or_insert(output);
    }
    let mut gaps = Gaps::default();
    let mut at_switch: BTreeMap<usize, Duration> = BTreeMap::new();
    let mut same_version = Vec::new();
    for outputs in by_partition.values() {
        let outputs: Vec<&Output> = outputs.values().copied().collect();
        let mut switch = 0;
        for pair in outputs.windows(2).filter(|pair| pair[0].timestamp_ms >= from_ms) {
            let gap = Duration::from_millis((pair[1].timestamp_ms - pair[0].timestamp_ms).max(0) as u64);
            if pair[0].tag == pair[1].tag {
                same_version.push(gap);
            } else {
                let longest = at_switch.entry(switch).or_default();
                *longest = (*longest).max(gap);
                switch += 1;
                gaps.switches += 1;
            }
        }
    }
    gaps.at_switch = at_switch.into_values().collect();
    let between_batches: Vec<Duration> = same_version.iter().copied().filter(|gap| !gap.is_zero()).collect();
    (gaps.elsewhere, gaps.typical) = (worst(&same_version), median(&between_batches));
    gaps
}

async fn measure(cluster: &Cluster, rounds: usize) -> Figures {
    let mut figures = Figures {
        deploy_answered: Vec::new(),
        deploy_running: Vec::new(),
        deploy_owned: Vec::new(),
        reload_answered: Vec::new(),
        reload_switched: Vec::new(),
        reload_prepare: Vec::new(),
        gaps: Gaps::default(),
        poll: Vec::new(),
    };
    measure_deploys(cluster, rounds, &mut figures).await;
    measure_reloads(cluster, rounds, &mut figures).await;
    figures
}

/// Now, in milliseconds since the Unix epoch, as the outputs' timestamps are.
fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn median(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    match sorted.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2,
    }
}

fn worst(samples: &[Duration]) -> Duration {
    samples.iter().copied().max().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

fn row(what: &str, cluster: &[Duration], single: &[Duration]) {
    let ratio = |a: Duration, b: Duration| {
        if b.is_zero() { "-".to_string() } else { format!("{:.1}", a.as_secs_f64() / b.as_secs_f64()) }
    };
    println!(
        "| {what} | {} | {} | {} | {} | {} | {} |",
        ms(median(cluster)),
        ms(worst(cluster)),
        ms(median(single)),
        ms(worst(single)),
        ratio(median(cluster), median(single)),
        ratio(worst(cluster), worst(single)),
    );
}

fn goal(what: &str, samples: &[Duration]) {
    let verdict = if worst(samples) < GOAL {
        "met: every round under 1 s"
    } else if median(samples) < GOAL {
        "met by the median, not by every round"
    } else {
        "not met"
    };
    println!("- {what}: {verdict} (median {} ms, worst {} ms)", ms(median(samples)), ms(worst(samples)));
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds = if std::env::var("SLUICE_BENCH_QUICK").is_ok() { 2 } else { ROUNDS };
    let started = Instant::now();
    let figures = {
        let cluster = Cluster::start(NODES);
        measure(&cluster, rounds).await
    };
    let baseline = {
        let single = Cluster::single();
        measure(&single, rounds).await
    };

    println!(
        "cluster control plane: {NODES} `sluice serve` nodes vs one `sluice serve --registry data-dir`, \
         tansu on loopback, {PARTITIONS} partitions, {rounds} rounds each, reports asked every {} ms; reloads \
         under {RATE} records/s",
        EVERY.as_millis()
    );
    println!("| ms | cluster median | cluster worst | single median | single worst | ratio median | ratio worst |");
    println!("|---|---|---|---|---|---|---|");
    row("deploy (passthrough, stored): call answered", &figures.deploy_answered, &baseline.deploy_answered);
    row("deploy -> running on the new revision everywhere", &figures.deploy_running, &baseline.deploy_running);
    row("deploy -> partitions split over the nodes", &figures.deploy_owned, &baseline.deploy_owned);
    row("reload (stored, through node 2): call answered", &figures.reload_answered, &baseline.reload_answered);
    row("reload -> every partition switched everywhere", &figures.reload_switched, &baseline.reload_switched);
    row("reload: longest instance preparation a partition reported", &figures.reload_prepare, &baseline.reload_prepare);
    row("reload: longest output gap of a partition across a switch", &figures.gaps.at_switch, &baseline.gaps.at_switch);
    row(
        "load: longest output gap of a partition away from switches",
        &[figures.gaps.elsewhere],
        &[baseline.gaps.elsewhere],
    );
    row(
        "load: median output gap of a partition between batches, away from switches",
        &[figures.gaps.typical],
        &[baseline.gaps.typical],
    );
    row("one round of asking every node for its report", &figures.poll, &baseline.poll);
    println!(
        "(switches seen in the outputs over all partitions: cluster {}, single {}; expected {} each)",
        figures.gaps.switches,
        baseline.gaps.switches,
        rounds * PARTITIONS as usize
    );
    for (setup, figures) in [("cluster", &figures), ("single", &baseline)] {
        let (at_switch, elsewhere) = (worst(&figures.gaps.at_switch), figures.gaps.elsewhere);
        if at_switch <= elsewhere {
            println!(
                "{setup}: the longest gap across a switch ({} ms) is within the load's own gaps ({} ms): no pause \
                 of a switch stands out from the outputs",
                ms(at_switch),
                ms(elsewhere)
            );
        } else {
            println!(
                "{setup}: a switch paused a partition's outputs up to {} ms, {} ms over the longest gap away from switches",
                ms(at_switch),
                ms(at_switch - elsewhere)
            );
        }
    }
    println!("goal of issue 11, under 1 s for a small module once compiled, on {NODES} nodes:");
    goal("deploy -> running everywhere", &figures.deploy_running);
    goal("reload -> switched everywhere", &figures.reload_switched);
    println!(
        "running: the report's state is running (consumer started) on the revision the deploy answered; \
         split: each partition owned by exactly one node (the consumer group's rebalance done). switched: \
         every owned partition's last batch was processed by the new revision. gaps: between the \
         timestamps of consecutive outputs of one input partition (produce time, ms), the longest per \
         switch, beside the longest anywhere else as the floor of the load. Total {:.0} s.",
        started.elapsed().as_secs_f64()
    );
}
