//! Operating pipelines through the admin API of a `sluice serve` process, on a real
//! Kafka-protocol broker (tansu): deploy over HTTP, hot reload and rollback under continuous
//! load with no record lost or processed twice, an invalid module refused on reload, offsets
//! reset while paused, a restart that restores every pipeline in its state, and the CLI.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use sluice::api::{
    AdminClient, Applied, ApplyResult, ClientError, ModuleChange, PartitionStatus, PipelineReport, PipelineState,
    StartPosition,
};
use sluice::engine::ModuleDigest;
use sluice::registry::pipelines::RevisionCause;
use sluice_tests::guests;
use sluice_tests::kafka::{ConsumedRecord, TansuBroker, consume_all, produce, unique_suffix};
use sluice_tests::process::{ServeProcess, sluice_binary};

/// How long a test waits for outputs or a state before it fails.
const WAIT: Duration = Duration::from_secs(90);
/// Partitions of every input topic here.
const PARTITIONS: i32 = 4;
/// The flags of a runtime that keeps its registry in its data directory, not in Kafka.
const DATA_DIR_REGISTRY: [&str; 2] = ["--registry", "data-dir"];

/// Runs a blocking admin API call off the test's async threads.
async fn api<T: Send + 'static>(url: &str, call: impl FnOnce(AdminClient) -> T + Send + 'static) -> T {
    let client = AdminClient::new(url, None);
    tokio::task::spawn_blocking(move || call(client)).await.expect("admin call task")
}

/// A pipeline's input and output topics, created on the broker.
struct Topics {
    input: String,
    output: String,
}

fn topics(broker: &TansuBroker) -> Topics {
    let id = unique_suffix();
    let topics = Topics { input: format!("in-{id}"), output: format!("out-{id}") };
    broker.create_topic(&topics.input, PARTITIONS);
    broker.create_topic(&topics.output, PARTITIONS);
    broker.create_topic(&format!("{}.dlq", pipeline_name(&topics)), 1);
    topics
}

/// The pipeline of `topics` is named after its input.
fn pipeline_name(topics: &Topics) -> String {
    format!("p-{}", topics.input)
}

fn spec(topics: &Topics) -> Value {
    json!({
        "name": pipeline_name(topics),
        "inputs": [topics.input],
        "outputs": { "default": topics.output },
        "processing": { "linger_ms": 5, "batch_size": 50 }
    })
}

/// Records `id-n` for `n` in `range`, record `n` on partition `n % PARTITIONS`, keyed `n`.
async fn produce_ids(bootstrap: &str, topic: &str, range: std::ops::Range<usize>) {
    let values: Vec<(i32, String, String)> =
        range.map(|n| ((n % PARTITIONS as usize) as i32, n.to_string(), format!("id-{n}"))).collect();
    let records: Vec<_> = values.iter().map(|(p, k, v)| (*p, Some(k.as_bytes()), v.as_bytes(), &[][..])).collect();
    produce(bootstrap, topic, &records).await;
}

/// One output of the tagged guests: which version made it, from which input.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Tagged {
    partition: i32,
    offset: i64,
    tag: String,
    id: usize,
}

fn tagged(record: &ConsumedRecord) -> Tagged {
    let value = record.value_text();
    let (tag, id) = value.split_once(':').unwrap_or_else(|| panic!("untagged output {value:?}"));
    let id: usize = id.strip_prefix("id-").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{value:?}"));
    let offset = std::str::from_utf8(record.header("sluice.test.offset").expect("offset header")).unwrap();
    Tagged { partition: (id % PARTITIONS as usize) as i32, offset: offset.parse().unwrap(), tag: tag.into(), id }
}

/// Waits until `check` holds for the pipeline's report, returning it.
async fn wait_for_report(url: &str, name: &str, what: &str, check: impl Fn(&PipelineReport) -> bool) -> PipelineReport {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let name = name.to_string();
        let report = api(url, move |c| c.get_pipeline(&name)).await.expect("pipeline report");
        if check(&report) {
            return report;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}; last report: {report:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `true` when every partition's worker runs `digest` and has processed a batch with it.
fn all_partitions_run(report: &PipelineReport, digest: &str) -> bool {
    let partitions = &report.status.partitions;
    partitions.len() == PARTITIONS as usize
        && partitions.iter().all(|p| {
            let processed_after_switch = match (p.next_offset, p.last_switch.map(|s| s.offset)) {
                (Some(next), Some(switched_at)) => next > switched_at,
                // The topic is new, so a partition past offset 0 has done a batch.
                (Some(next), None) => next > 0,
                (None, _) => false,
            };
            p.module.as_deref() == Some(digest) && processed_after_switch
        })
}

/// One test's setting: a broker, a `sluice serve` process on a fresh data directory, and the
/// topics of one pipeline.
struct World {
    broker: TansuBroker,
    dir: tempfile::TempDir,
    serve: ServeProcess,
    topics: Topics,
}

impl World {
    /// A broker and a runtime keeping its registry in it (the default).
    fn start() -> World {
        World::start_with(&[])
    }

    /// A broker and a runtime started with `args`.
    fn start_with(args: &[&str]) -> World {
        let broker = TansuBroker::start();
        let dir = tempfile::tempdir().unwrap();
        let serve = ServeProcess::start(&broker.bootstrap(), &dir.path().join("data"), args);
        let topics = topics(&broker);
        World { broker, dir, serve, topics }
    }
}

/// Deploys `guest` as the pipeline of `topics` in one call (`POST /v1/deploy`).
async fn deploy(url: &str, topics: &Topics, guest: &str) -> ApplyResult {
    let (spec, module) = (spec(topics), guests::component(guest));
    api(url, move |c| c.deploy(&spec, &module, &mut |_, _| {})).await.expect("deploy")
}

/// Reloads the pipeline `name` with the component file `module`.
async fn reload(url: &str, name: &str, module: PathBuf) -> Result<ModuleChange, ClientError> {
    let name = name.to_string();
    api(url, move |c| c.reload(&name, &module, &mut |_, _| {})).await
}

/// Runs `call` with the pipeline's name, off the test's async threads: pause, resume,
/// rollback, offsets.
async fn act<T: Send + 'static>(
    url: &str,
    name: &str,
    call: impl FnOnce(&AdminClient, &str) -> Result<T, ClientError> + Send + 'static,
) -> Result<T, ClientError> {
    let name = name.to_string();
    api(url, move |c| call(&c, &name)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_deployed_over_http_writes_its_outputs_to_the_output_topic() {
    let World { broker, dir: _dir, serve, topics } = World::start();
    let answer = deploy(serve.url(), &topics, "tagged-v1").await;
    assert_eq!(answer.result, Applied::Created);
    assert_eq!(answer.pipeline.state, PipelineState::Running);
    assert_eq!(answer.pipeline.revision, 1);
    assert_eq!(answer.module.map(|m| m.digest), Some(answer.pipeline.module));

    produce_ids(&broker.bootstrap(), &topics.input, 0..200).await;
    let outputs = consume_all(&broker.bootstrap(), &topics.output, 200, WAIT).await;
    let ids: BTreeSet<usize> = outputs.iter().map(|r| tagged(r).id).collect();
    assert_eq!(ids, (0..200).collect(), "every input comes out once");
    assert!(outputs.iter().all(|r| tagged(r).tag == "v1"));

    let name = pipeline_name(&topics);
    let report = wait_for_report(serve.url(), &name, "offsets committed", |r| {
        r.offsets.iter().map(|p| p.committed.unwrap_or(0)).sum::<i64>() == 200
    })
    .await;
    for partition in &report.offsets {
        assert_eq!(partition.lag, 0, "{partition:?}");
        assert_eq!(partition.high_watermark, 50, "{partition:?}");
    }
    let metrics = api(serve.url(), |c| c.metrics()).await.unwrap();
    assert!(metrics.contains(&format!("sluice_pipeline_records_in_total{{pipeline=\"{name}\"}} 200")), "{metrics}");
    // A clean run shows its fault counters, at zero, for every kind.
    for kind in ["trap", "memory-limit", "cpu-limit", "timeout"] {
        let line = format!("sluice_pipeline_calls_failed_total{{pipeline=\"{name}\",kind=\"{kind}\"}} 0");
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
    let blocked = format!("sluice_pipeline_partitions_blocked{{pipeline=\"{name}\"}} 0");
    assert!(metrics.contains(&blocked), "{blocked} in {metrics}");
    for counter in ["bisections", "reruns", "instance_rebuilds", "instances_retired"] {
        let line = format!("sluice_pipeline_{counter}_total{{pipeline=\"{name}\"}} 0");
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
}

/// Produces ids from `next` on, a batch every few milliseconds, until told to stop.
fn keep_producing(
    bootstrap: String,
    topic: String,
    next: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let from = next.load(Ordering::Relaxed);
            produce_ids(&bootstrap, &topic, from..from + 40).await;
            next.store(from + 40, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_and_rollback_under_load_switch_each_partition_once_and_lose_nothing() {
    let World { broker, dir: _dir, serve, topics } = World::start();
    let name = pipeline_name(&topics);
    let deployed = deploy(serve.url(), &topics, "tagged-v1").await;
    let v1_digest = deployed.pipeline.module.clone();

    let (next, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
    let producer = keep_producing(broker.bootstrap(), topics.input.clone(), next.clone(), stop.clone());
    wait_for_report(serve.url(), &name, "v1 on every partition", |r| all_partitions_run(r, &v1_digest)).await;

    // Reload v2 while records flow.
    let reloaded = reload(serve.url(), &name, guests::component("tagged-v2")).await.expect("reload v2");
    let v2_digest = reloaded.pipeline.module.clone();
    assert_ne!(v2_digest, v1_digest);
    assert_eq!(reloaded.pipeline.revision, 2);
    assert_eq!(reloaded.pipeline.state, PipelineState::Running);
    let after_reload =
        wait_for_report(serve.url(), &name, "v2 on every partition", |r| all_partitions_run(r, &v2_digest)).await;

    // Roll back to v1 while records flow.
    let rolled = act(serve.url(), &name, |c, name| c.rollback(name, None)).await.expect("rollback");
    assert_eq!(rolled.pipeline.module, v1_digest);
    assert_eq!(rolled.pipeline.revision, 3);
    let after_rollback =
        wait_for_report(serve.url(), &name, "v1 again on every partition", |r| all_partitions_run(r, &v1_digest)).await;

    stop.store(true, Ordering::Relaxed);
    producer.await.unwrap();
    let produced = next.load(Ordering::Relaxed);
    let outputs = consume_all(&broker.bootstrap(), &topics.output, produced, WAIT).await;
    let mut outputs: Vec<Tagged> = outputs.iter().map(tagged).collect();
    outputs.sort();

    // Every input has exactly one output.
    let ids: Vec<usize> = {
        let mut ids: Vec<usize> = outputs.iter().map(|t| t.id).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids, (0..produced).collect::<Vec<_>>(), "each of the {produced} inputs comes out exactly once");

    // Each partition runs v1, then v2 from one offset, then v1 again from one offset, and the
    // offsets are the ones the runtime reported.
    for partition in 0..PARTITIONS {
        let runs: Vec<(String, i64)> =
            outputs.iter().filter(|t| t.partition == partition).fold(Vec::new(), |mut runs: Vec<(String, i64)>, t| {
                if runs.last().is_none_or(|(tag, _)| *tag != t.tag) {
                    runs.push((t.tag.clone(), t.offset));
                }
                runs
            });
        let tags: Vec<&str> = runs.iter().map(|(tag, _)| tag.as_str()).collect();
        assert_eq!(tags, ["v1", "v2", "v1"], "partition {partition} switches exactly twice: {runs:?}");
        let switch = |report: &PipelineReport| {
            report
                .status
                .partitions
                .iter()
                .find(|p: &&PartitionStatus| p.partition == partition)
                .and_then(|p| p.last_switch.map(|s| s.offset))
                .unwrap()
        };
        assert_eq!(runs[1].1, switch(&after_reload), "partition {partition}: v2 starts where the runtime says");
        assert_eq!(runs[2].1, switch(&after_rollback), "partition {partition}: v1 resumes where the runtime says");
    }

    let report = api(serve.url(), move |c| c.get_pipeline(&name)).await.unwrap();
    let causes: Vec<&str> = report.revisions.iter().map(|r| r.cause.as_str()).collect();
    assert_eq!(causes, ["deploy", "reload", "rollback"]);
    assert_eq!(report.status.failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_module_on_reload_is_refused_and_the_running_version_keeps_going() {
    let World { broker, dir, serve, topics } = World::start();
    let name = pipeline_name(&topics);
    deploy(serve.url(), &topics, "tagged-v1").await;
    produce_ids(&broker.bootstrap(), &topics.input, 0..40).await;

    let bad = dir.path().join("core.wasm");
    std::fs::write(&bad, wat::parse_str("(module)").unwrap()).unwrap();
    let error = reload(serve.url(), &name, bad).await.unwrap_err();
    let failure = error.api().expect("an API error");
    assert_eq!((failure.status, failure.code.as_str()), (422, "invalid_module"));
    assert!(failure.message.contains("core WebAssembly module, not a component"), "{}", failure.message);

    let pipelines = api(serve.url(), move |c| c.list_pipelines()).await.unwrap();
    assert_eq!(pipelines[0].revision, 1);
    assert_eq!(pipelines[0].state, PipelineState::Running);
    produce_ids(&broker.bootstrap(), &topics.input, 40..80).await;
    let outputs = consume_all(&broker.bootstrap(), &topics.output, 80, WAIT).await;
    assert_eq!(outputs.len(), 80);
    assert!(outputs.iter().all(|r| tagged(r).tag == "v1"), "v1 still processes every record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_restores_each_pipeline_in_its_state_and_it_resumes_from_its_offsets() {
    let broker = TansuBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut serve = ServeProcess::start(&broker.bootstrap(), &data, &[]);
    let (running, paused) = (topics(&broker), topics(&broker));
    for topics in [&running, &paused] {
        deploy(serve.url(), topics, "tagged-v1").await;
    }
    reload(serve.url(), &pipeline_name(&running), guests::component("tagged-v2")).await.expect("reload");
    act(serve.url(), &pipeline_name(&paused), |c, name| c.pause(name)).await.expect("pause");
    produce_ids(&broker.bootstrap(), &running.input, 0..100).await;
    assert_eq!(consume_all(&broker.bootstrap(), &running.output, 100, WAIT).await.len(), 100);

    serve.terminate();
    // While the runtime is down.
    produce_ids(&broker.bootstrap(), &running.input, 100..200).await;
    produce_ids(&broker.bootstrap(), &paused.input, 0..50).await;
    let serve = ServeProcess::start(&broker.bootstrap(), &data, &[]);

    let list = api(serve.url(), |c| c.list_pipelines()).await.unwrap();
    let states: BTreeMap<String, (PipelineState, u64)> =
        list.into_iter().map(|p| (p.name, (p.state, p.revision))).collect();
    assert_eq!(
        states,
        BTreeMap::from([
            (pipeline_name(&running), (PipelineState::Running, 2)),
            (pipeline_name(&paused), (PipelineState::Paused, 1)),
        ])
    );
    // The running pipeline resumes after what it committed, with v2; nothing is missing.
    let outputs = consume_all(&broker.bootstrap(), &running.output, 200, WAIT).await;
    let ids: BTreeSet<usize> = outputs.iter().map(|r| tagged(r).id).collect();
    assert_eq!(ids, (0..200).collect(), "no record lost across the restart");
    assert!(outputs.iter().filter(|r| tagged(r).id >= 100).all(|r| tagged(r).tag == "v2"));
    // The paused one processed nothing until resumed.
    assert!(consume_all(&broker.bootstrap(), &paused.output, 1, Duration::from_secs(3)).await.is_empty());
    act(serve.url(), &pipeline_name(&paused), |c, name| c.resume(name)).await.expect("resume");
    assert_eq!(consume_all(&broker.bootstrap(), &paused.output, 50, WAIT).await.len(), 50);
}

/// Writes a `sluice serve` config file declaring the pipeline of `topics` with `guest`, its
/// module a path relative to the file (a copy of the guest next to it).
fn declare(dir: &std::path::Path, broker: &TansuBroker, topics: &Topics, guest: &str) -> PathBuf {
    let path = dir.join("sluice.toml");
    std::fs::create_dir_all(dir.join("functions")).unwrap();
    std::fs::copy(guests::component(guest), dir.join("functions").join(format!("{guest}.wasm"))).unwrap();
    let text = format!(
        r#"data_dir = "{data}"

[kafka]
brokers = "{brokers}"

[[pipeline]]
name = "{name}"
inputs = ["{input}"]
outputs = {{ default = "{output}" }}
module = "functions/{guest}.wasm"
processing = {{ linger_ms = 5, batch_size = 50 }}
"#,
        data = dir.join("data").display(),
        brokers = broker.bootstrap(),
        name = pipeline_name(topics),
        input = topics.input,
        output = topics.output,
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn serve_with_config(config: &std::path::Path, log: PathBuf) -> ServeProcess {
    ServeProcess::spawn(&["--config".as_ref(), config.as_ref(), "--status-every".as_ref(), "0".as_ref()], log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_over_the_api_survives_a_restart_while_the_config_file_is_unchanged() {
    let broker = TansuBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = topics(&broker);
    let name = pipeline_name(&topics);
    let config = declare(dir.path(), &broker, &topics, "tagged-v1");
    let mut serve = serve_with_config(&config, dir.path().join("first.log"));
    // The file's module path, relative to the file, is stored and deployed as its digest.
    let report = api(serve.url(), {
        let name = name.clone();
        move |c| c.get_pipeline(&name)
    })
    .await
    .unwrap();
    let v1 = ModuleDigest::of(&guests::component_bytes("tagged-v1"));
    assert_eq!((&report.spec.module, report.revisions[0].cause), (&v1, RevisionCause::Deploy), "{report:#?}");
    let v2 = reload(serve.url(), &name, guests::component("tagged-v2")).await.expect("reload");
    assert_eq!((v2.applied, v2.pipeline.revision), (Applied::Reloaded, 2), "{v2:?}");
    serve.terminate();

    // The file still says v1, as when it was applied: the API's v2 stays.
    let mut serve = serve_with_config(&config, dir.path().join("second.log"));
    let list = api(serve.url(), |c| c.list_pipelines()).await.unwrap();
    let row = &list[0];
    assert_eq!((row.revision, &row.module), (2, &v2.pipeline.module), "{list:?}");
    assert!(
        serve.log().contains("keeping the stored state"),
        "the start-up log says the file and the stored state differ:\n{}",
        serve.log()
    );
    produce_ids(&broker.bootstrap(), &topics.input, 0..40).await;
    let outputs = consume_all(&broker.bootstrap(), &topics.output, 40, WAIT).await;
    assert!(outputs.iter().all(|r| tagged(r).tag == "v2"), "v2 processes after the restart");
    serve.terminate();

    // A changed file is applied, as a new revision.
    let config = declare(dir.path(), &broker, &topics, "passthrough");
    let serve = serve_with_config(&config, dir.path().join("third.log"));
    let report = api(serve.url(), move |c| c.get_pipeline(&name)).await.unwrap();
    assert_eq!(report.revision, 3, "the changed declaration is a new revision: {report:#?}");
    let passthrough = ModuleDigest::of(&guests::component_bytes("passthrough"));
    assert_eq!(report.spec.module, passthrough, "the file's new module runs: {report:#?}");
    let causes: Vec<RevisionCause> = report.revisions.iter().map(|r| r.cause).collect();
    assert_eq!(causes, [RevisionCause::Deploy, RevisionCause::Reload, RevisionCause::Deploy]);
}

/// A made-up password for this test run.
fn cache_password() -> String {
    format!("pw-{}-{}", std::process::id(), unique_suffix())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_pipeline_whose_cache_is_down_fails_without_its_password_in_log_or_answers() {
    let broker = TansuBroker::start();
    for topic in ["in", "out", "cached.dlq"] {
        broker.create_topic(topic, 1);
    }
    let dir = tempfile::tempdir().unwrap();
    let secret = cache_password();
    std::fs::copy(guests::component("passthrough"), dir.path().join("f.wasm")).unwrap();
    let config = dir.path().join("sluice.toml");
    // The broker and the topics are there; nothing listens on port 1, so the cache cannot be
    // reached.
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "{data}"

[kafka]
brokers = "{brokers}"

[[pipeline]]
name = "cached"
inputs = ["in"]
outputs = {{ default = "out" }}
module = "f.wasm"
cache = "redis://app:{secret}@127.0.0.1:1/0?connect_timeout_ms=200"
"#,
            data = dir.path().join("data").display(),
            brokers = broker.bootstrap(),
        ),
    )
    .unwrap();
    let serve = serve_with_config(&config, dir.path().join("serve.log"));
    let report = wait_for_report(serve.url(), "cached", "the failed state", |r| r.state == PipelineState::Failed).await;
    let error = report.error.as_deref().unwrap_or_default();
    assert!(error.contains("cache redis://***@127.0.0.1:1/0"), "the error names the cache: {report:#?}");
    // The answer as sent, not only as read back.
    let sent = serde_json::to_value(&report).unwrap();
    assert_eq!(sent["spec"]["cache"], "redis://***@127.0.0.1:1/0?connect_timeout_ms=200");
    assert!(!sent.to_string().contains(&secret), "{sent:#}");
    let list = api(serve.url(), |c| c.list_pipelines()).await.unwrap();
    let list = serde_json::to_string(&list).unwrap();
    assert!(!list.contains(&secret), "{list}");
    let log = serve.log();
    assert!(log.contains("pipeline not started") && log.contains("redis://***@127.0.0.1:1"), "{log}");
    assert!(!log.contains(&secret), "the password is in the log:\n{log}");
}

#[test]
fn serve_refuses_a_config_file_whose_cache_url_is_bad_naming_the_cache_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let secret = cache_password();
    let config = dir.path().join("sluice.toml");
    let text = format!(
        "[kafka]\nbrokers = \"127.0.0.1:1\"\n\n[[pipeline]]\nname = \"p\"\ninputs = [\"in\"]\n\
         outputs = {{ default = \"out\" }}\nmodule = \"f.wasm\"\ncache = \"redis://app:{secret}@h:99999\"\n"
    );
    std::fs::write(&config, text).unwrap();
    let output = Command::new(sluice_binary()).arg("serve").arg("--config").arg(&config).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cache: cache URL \"redis://***@h:99999\": port \"99999\""), "{stderr}");
    assert!(!stderr.contains(&secret), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_pipeline_that_cannot_start_is_failed_and_retried_not_fatal() {
    let broker = TansuBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let id = unique_suffix();
    // The output topic does not exist yet.
    let topics = Topics { input: format!("in-{id}"), output: format!("out-{id}") };
    broker.create_topic(&topics.input, PARTITIONS);
    broker.create_topic(&format!("{}.dlq", pipeline_name(&topics)), 1);
    let config = declare(dir.path(), &broker, &topics, "tagged-v1");
    let serve = serve_with_config(&config, dir.path().join("serve.log"));
    let name = pipeline_name(&topics);
    let report = wait_for_report(serve.url(), &name, "the failed state", |r| r.state == PipelineState::Failed).await;
    let error = report.error.as_deref().unwrap_or_default();
    assert!(error.contains(&topics.output) && error.contains("do not exist"), "{report:#?}");

    broker.create_topic(&topics.output, PARTITIONS);
    wait_for_report(serve.url(), &name, "the retried start", |r| r.state == PipelineState::Running).await;
    produce_ids(&broker.bootstrap(), &topics.input, 0..40).await;
    assert_eq!(consume_all(&broker.bootstrap(), &topics.output, 40, WAIT).await.len(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_the_running_module_answers_unchanged_and_adds_no_revision() {
    let World { broker: _broker, dir: _dir, serve, topics } = World::start();
    let name = pipeline_name(&topics);
    deploy(serve.url(), &topics, "tagged-v1").await;
    let again = reload(serve.url(), &name, guests::component("tagged-v1")).await.expect("reload");
    assert_eq!((again.applied, again.pipeline.revision), (Applied::Unchanged, 1), "{again:?}");
    let out = cli(serve.url(), &["reload", &name, guests::component("tagged-v1").to_str().unwrap()]);
    assert!(out.contains(&format!("pipeline {name} unchanged")), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_faster_than_batches_mark_the_skipped_revision_superseded() {
    let World { broker: _broker, dir: _dir, serve, topics } = World::start();
    let name = pipeline_name(&topics);
    deploy(serve.url(), &topics, "tagged-v1").await;
    wait_for_report(serve.url(), &name, "every partition assigned", |r| {
        r.status.owned_partitions == PARTITIONS as usize
    })
    .await;
    // No record flows, so no partition takes a revision up between these two reloads.
    let first = reload(serve.url(), &name, guests::component("tagged-v2")).await.expect("reload to v2");
    assert_eq!(first.pipeline.revision, 2);
    let second = reload(serve.url(), &name, guests::component("passthrough")).await.expect("reload again");
    assert_eq!((second.pipeline.revision, second.superseded), (3, Some(2)), "{second:?}");
    let report = api(serve.url(), move |c| c.get_pipeline(&name)).await.unwrap();
    let superseded: Vec<u64> = report.revisions.iter().filter(|r| r.superseded).map(|r| r.revision).collect();
    assert_eq!(superseded, vec![2], "{report:#?}");
    assert!(!serve.log().contains("partition switched"), "no switch is claimed:\n{}", serve.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_reset_only_while_paused_and_the_pipeline_resumes_from_them() {
    let World { broker, dir: _dir, serve, topics } = World::start();
    let name = pipeline_name(&topics);
    deploy(serve.url(), &topics, "tagged-v1").await;
    produce_ids(&broker.bootstrap(), &topics.input, 0..40).await;
    assert_eq!(consume_all(&broker.bootstrap(), &topics.output, 40, WAIT).await.len(), 40);

    let error = act(serve.url(), &name, |c, name| c.reset_offsets(name, StartPosition::Earliest)).await.unwrap_err();
    let failure = error.api().expect("an API error");
    assert_eq!((failure.status, failure.code.as_str()), (409, "conflict"), "{failure}");
    assert!(failure.message.contains("pause it"), "{failure}");

    act(serve.url(), &name, |c, name| c.pause(name)).await.expect("pause");
    let reset = act(serve.url(), &name, |c, name| c.reset_offsets(name, StartPosition::Earliest)).await.expect("reset");
    let offsets: Vec<i64> = reset.iter().map(|o| o.offset).collect();
    assert_eq!(offsets, vec![0; PARTITIONS as usize]);
    act(serve.url(), &name, |c, name| c.resume(name)).await.expect("resume");
    // Every record is processed a second time, from the start.
    let outputs = consume_all(&broker.bootstrap(), &topics.output, 80, WAIT).await;
    let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
    for output in &outputs {
        *counts.entry(tagged(output).id).or_default() += 1;
    }
    assert!(counts.values().all(|&n| n == 2) && counts.len() == 40, "{counts:?}");
}

/// Runs the `sluice` CLI against the API at `url`; returns stdout, or panics with stderr.
fn cli(url: &str, args: &[&str]) -> String {
    let output =
        Command::new(sluice_binary()).args(args).env("SLUICE_URL", url).env("RUST_BACKTRACE", "0").output().unwrap();
    assert!(output.status.success(), "sluice {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_deploys_lists_reloads_rolls_back_pauses_resumes_and_removes_a_pipeline() {
    let World { broker, dir: _dir, serve, topics } = World::start();
    let name = pipeline_name(&topics);
    let url = serve.url().to_string();
    let (v1, v2) = (guests::component("tagged-v1"), guests::component("tagged-v2"));
    let (v1, v2) = (v1.to_str().unwrap(), v2.to_str().unwrap());

    let deployed: Value = serde_json::from_str(&cli(
        &url,
        &["deploy", v1, "--name", &name, "--input", &topics.input, "--output", &topics.output, "--json"],
    ))
    .unwrap();
    assert_eq!(deployed["result"], "created");
    let table = cli(&url, &["ls"]);
    assert!(table.starts_with("NAME") && table.contains(&name) && table.contains("running"), "{table}");

    let reloaded: Value = serde_json::from_str(&cli(&url, &["reload", &name, v2, "--json"])).unwrap();
    assert_eq!(reloaded["revision"], 2);
    let rolled: Value = serde_json::from_str(&cli(&url, &["rollback", &name, "--json"])).unwrap();
    assert_eq!((rolled["revision"].as_u64(), &rolled["module"]), (Some(3), &deployed["pipeline"]["module"]));
    let rolled: Value = serde_json::from_str(&cli(&url, &["rollback", &name, "--revision", "2", "--json"])).unwrap();
    assert_eq!(rolled["module"], reloaded["module"]);

    assert!(cli(&url, &["pause", &name]).contains("paused"));
    let status = cli(&url, &["status", &name]);
    assert!(status.contains("state      paused") && status.contains("rollback"), "{status}");
    assert!(cli(&url, &["resume", &name]).contains("running"));
    produce_ids(&broker.bootstrap(), &topics.input, 0..20).await;
    let outputs = consume_all(&broker.bootstrap(), &topics.output, 20, WAIT).await;
    assert!(outputs.iter().all(|r| tagged(r).tag == "v2"), "revision 4 runs v2");

    cli(&url, &["rm", &name]);
    let listed: Value = serde_json::from_str(&cli(&url, &["ls", "--json"])).unwrap();
    assert_eq!(listed["pipelines"], json!([]));
    let modules: Value = serde_json::from_str(&cli(&url, &["modules", "--json"])).unwrap();
    assert_eq!(modules["modules"].as_array().unwrap().len(), 2, "modules stay until deleted");
}

#[test]
fn serve_refuses_an_open_admin_api_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(sluice_binary())
        .args(["serve", "--brokers", "127.0.0.1:1", "--admin-listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("SLUICE_ADMIN_TOKEN")
        .env_remove("SLUICE_READ_TOKEN")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("refusing to serve the admin API on 0.0.0.0:0 without a token"), "{stderr}");
}

/// The bound on every read below: listing, a report and `/metrics` answer within it whatever
/// the broker or a change is doing (a bound on the answer, not a speed measurement).
const READ_BOUND: Duration = Duration::from_secs(1);

/// `GET path` on the API at `url`, given up after [`READ_BOUND`]: the status and the body.
fn get_within_bound(url: &str, path: &str) -> Result<(u16, String), String> {
    use std::io::{Read as _, Write as _};
    let deadline = std::time::Instant::now() + READ_BOUND;
    let address = url.trim_start_matches("http://").trim_end_matches('/');
    let address: std::net::SocketAddr = address.parse().map_err(|e| format!("{address}: {e}"))?;
    let mut stream = std::net::TcpStream::connect_timeout(&address, READ_BOUND).map_err(|e| e.to_string())?;
    let remaining = || deadline.saturating_duration_since(std::time::Instant::now()).max(Duration::from_millis(1));
    stream.set_write_timeout(Some(remaining())).map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    loop {
        if std::time::Instant::now() >= deadline {
            return Err(format!("GET {path}: no whole answer within {READ_BOUND:?}"));
        }
        stream.set_read_timeout(Some(remaining())).map_err(|e| e.to_string())?;
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
            Err(e) => return Err(format!("GET {path}: no whole answer within {READ_BOUND:?}: {e}")),
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or(format!("GET {path}: {text}"))?;
    Ok((status, text))
}

/// Runs `call` on its own task and, until it answers (and at least once), checks that reads
/// answer within the bound; answers the call's result and how many rounds of reads answered.
async fn reads_answer_during<T: Send + 'static>(
    url: &str,
    name: &str,
    during: &str,
    call: impl std::future::Future<Output = T> + Send + 'static,
) -> (T, usize) {
    let call = tokio::spawn(call);
    let mut reads = 0;
    while !call.is_finished() || reads == 0 {
        reads_answer_within_the_bound(url, name, during).await;
        reads += 1;
    }
    (call.await.unwrap(), reads)
}

/// Reads the list, the report of `name` and `/metrics`, each within [`READ_BOUND`], and
/// returns the state the report gives.
async fn reads_answer_within_the_bound(url: &str, name: &str, during: &str) -> String {
    let (url, name, during) = (url.to_string(), name.to_string(), during.to_string());
    tokio::task::spawn_blocking(move || {
        let mut state = String::new();
        for path in ["/v1/pipelines".to_string(), format!("/v1/pipelines/{name}"), "/metrics".to_string()] {
            let (status, text) = get_within_bound(&url, &path).unwrap_or_else(|e| panic!("{during}: {e}"));
            assert_eq!(status, 200, "{during}: GET {path}: {text}");
            if path.ends_with(&name) {
                let body = &text[text.find("\r\n\r\n").map_or(0, |at| at + 4)..];
                // The body may be chunked: the state is found in the text either way.
                let at = body.find("\"state\":\"").map(|at| at + 9).unwrap_or_else(|| panic!("{during}: {body}"));
                state = body[at..].split('"').next().unwrap_or_default().to_string();
            }
        }
        state
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_broker_gone_a_runtime_keeping_its_registry_in_kafka_answers_reads_refuses_changes_and_waits_to_start()
{
    let World { mut broker, dir, serve, topics } = World::start();
    let name = pipeline_name(&topics);
    deploy(serve.url(), &topics, "tagged-v1").await;
    wait_for_report(serve.url(), &name, "partitions owned", |r| r.status.owned_partitions == PARTITIONS as usize).await;

    broker.stop();
    for _ in 0..3 {
        reads_answer_within_the_bound(serve.url(), &name, "broker gone").await;
    }

    // A change is applied once it is in the registry's log: with the broker gone it is refused,
    // naming the registry topic, and nothing changes. Reads answer meanwhile.
    let pause = {
        let (url, name) = (serve.url().to_string(), name.clone());
        async move { act(&url, &name, |c, name| c.pause(name)).await }
    };
    let (refused, reads_during_pause) = reads_answer_during(serve.url(), &name, "pause under way", pause).await;
    let refused = refused.expect_err("a pause cannot reach the registry with the broker gone");
    assert!(refused.to_string().contains("registry topic _sluice_registry"), "{refused}");
    let state = reads_answer_within_the_bound(serve.url(), &name, "pause refused").await;
    assert_eq!(state, "running", "the refused pause changed nothing");
    eprintln!("reads during the refused pause: {reads_during_pause}; it answered {refused}");

    // A runtime started with the broker gone waits for the registry, saying so once, and serves
    // the registry's pipelines once the broker is back.
    drop(serve);
    let mut serve = ServeProcess::start_unready(&broker.bootstrap(), &dir.path().join("data"), &[]);
    let said = "cannot read the registry from the cluster";
    let deadline = tokio::time::Instant::now() + WAIT;
    while !serve.own_log().contains(said) {
        assert!(tokio::time::Instant::now() < deadline, "no line says it waits:\n{}", serve.own_log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!serve.own_log().contains("admin API on"), "it serves before it read the registry:\n{}", serve.own_log());
    broker.restart();
    tokio::task::block_in_place(|| serve.wait_ready());
    assert_eq!(serve.own_log().matches(said).count(), 1, "the wait is logged once:\n{}", serve.own_log());
    wait_for_report(serve.url(), &name, "partitions owned after the wait", |r| {
        r.state == PipelineState::Running && r.status.owned_partitions == PARTITIONS as usize
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_broker_gone_a_runtime_on_its_data_dir_answers_reads_within_a_second_during_changes_and_retries() {
    let World { mut broker, dir, serve, topics } = World::start_with(&DATA_DIR_REGISTRY);
    let name = pipeline_name(&topics);
    deploy(serve.url(), &topics, "tagged-v1").await;
    let other = self::topics(&broker);
    let other_name = pipeline_name(&other);
    deploy(serve.url(), &other, "tagged-v1").await;
    wait_for_report(serve.url(), &name, "partitions owned", |r| r.status.owned_partitions == PARTITIONS as usize).await;

    broker.stop();
    for _ in 0..3 {
        reads_answer_within_the_bound(serve.url(), &name, "broker gone").await;
    }

    // An update that restarts the pipeline waits on the broker (checking its topics): reads
    // answer meanwhile.
    let mut changed = act(serve.url(), &name, |c, name| c.get_pipeline(name)).await.unwrap().spec;
    changed.processing.batch_size = 60;
    let update = {
        let url = serve.url().to_string();
        async move { api(&url, move |c| c.apply(&changed)).await }
    };
    let (updated, reads_during_update) = reads_answer_during(serve.url(), &name, "update under way", update).await;
    eprintln!("reads during the update: {reads_during_update}; the update answered {updated:?}");

    // A pause stops the pipeline with the broker gone (its final commit waits for it): reads
    // answer meanwhile.
    let pause = {
        let (url, name) = (serve.url().to_string(), name.clone());
        async move { act(&url, &name, |c, name| c.pause(name)).await }
    };
    let (paused, reads_during_pause) = reads_answer_during(serve.url(), &name, "pause under way", pause).await;
    let paused = paused.expect("pause with the broker gone");
    assert_eq!(paused.state, PipelineState::Paused, "{paused:?}");
    eprintln!("reads during the pause: {reads_during_pause}");

    // A restart with the broker gone: the other pipeline cannot start and is retried every
    // 5 s, each try waiting on the broker. Reads answer meanwhile, and a change of the paused
    // pipeline does not wait for the retries.
    drop(serve);
    let serve = ServeProcess::start(&broker.bootstrap(), &dir.path().join("data"), &DATA_DIR_REGISTRY);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(12);
    while tokio::time::Instant::now() < deadline {
        let state = reads_answer_within_the_bound(serve.url(), &other_name, "retries under way").await;
        assert_eq!(state, "failed", "the other pipeline cannot start with the broker gone");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(serve.log().contains("trying again every"), "{}", serve.log());
    let mut changed = act(serve.url(), &name, |c, name| c.get_pipeline(name)).await.unwrap().spec;
    changed.processing.batch_size = 70;
    let answer = api(serve.url(), move |c| c.apply(&changed))
        .await
        .expect("an update of the paused pipeline while the other is retried");
    assert_eq!((answer.result, answer.pipeline.state), (Applied::Updated, PipelineState::Paused));

    broker.restart();
    wait_for_report(serve.url(), &other_name, "the retried start", |r| r.state == PipelineState::Running).await;
}
