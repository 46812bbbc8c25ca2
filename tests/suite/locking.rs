//! The manager's locks, in process on a real broker (tansu): a pipeline whose stop cannot end
//! (its function waits on a frozen Redis) holds back neither reads nor changes of another
//! pipeline, and a pause that waits for it longer than the stop time limit fails, naming the
//! pipeline and the limit, and leaves the pipeline `stopping`, then `paused` once the stop ends.

use std::collections::BTreeMap;
use std::time::Duration;

use sluice::engine::Limits;
use sluice::kafka::KafkaConfig;
use sluice::manager::{Applied, ManagerConfig, ManagerError, PipelineManager, PipelineState};
use sluice::pipeline::spec::{PipelineSpec, Processing};
use sluice_tests::guests;
use sluice_tests::kafka::{TansuBroker, produce, unique_suffix};
use sluice_tests::servers::RedisServer;

/// How long a test waits for a state before it fails.
const WAIT: Duration = Duration::from_secs(90);

/// The stop time limit of these tests' manager: far below the time the blocked stop takes
/// (the Redis call timeout below), far above what any other call here takes.
const STOP_LIMIT: Duration = Duration::from_secs(15);

/// The Redis call timeout of the blocked pipeline: its function's cache call, and so its
/// stop, waits this long on a frozen server.
const REDIS_CALL_TIMEOUT_MS: u64 = 60_000;

/// A pipeline of the module `module` from a new input topic to a new output topic, with `cache`.
fn spec(broker: &TansuBroker, prefix: &str, module: &str, cache: &str) -> PipelineSpec {
    let id = unique_suffix();
    let (input, output, dead_letters) = (format!("in-{id}"), format!("out-{id}"), format!("dlq-{id}"));
    for topic in [&input, &output, &dead_letters] {
        broker.create_topic(topic, 1);
    }
    PipelineSpec {
        name: format!("{prefix}-{id}"),
        inputs: vec![input],
        outputs: BTreeMap::from([("default".to_string(), output)]),
        module: module.parse().expect("a module digest"),
        cache: cache.parse().expect("a cache URL"),
        namespace: None,
        config: BTreeMap::new(),
        processing: Processing { dead_letter_topic: Some(dead_letters), linger_ms: 5, ..Processing::default() },
        group: Default::default(),
    }
}

/// Waits until pipeline `name` is in `state`.
async fn wait_for_state(manager: &PipelineManager, name: &str, state: PipelineState) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let summary = manager.summary(name).await.expect("summary");
        if summary.state == state {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "pipeline {name} is not {state:?}: {summary:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until pipeline `name` owns a partition.
async fn wait_owning(manager: &PipelineManager, name: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while manager.get_status(name).await.expect("status").owned_partitions == 0 {
        assert!(tokio::time::Instant::now() < deadline, "pipeline {name} owns no partition");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_whose_stop_hangs_holds_back_no_other_pipeline_and_its_pause_fails_at_the_stop_limit() {
    let broker = TansuBroker::start();
    let redis = RedisServer::start();
    let data_dir = tempfile::tempdir().unwrap();
    let config = ManagerConfig {
        stop_timeout: STOP_LIMIT,
        // A call may wait on the cache for as long as the cache lets it.
        limits: Limits { call_timeout: Duration::from_secs(120), ..Limits::default() },
        ..ManagerConfig::new(data_dir.path(), KafkaConfig::new(broker.bootstrap()))
    };
    let manager = PipelineManager::open(config).await.unwrap();
    let counter = manager.store_module(guests::component_bytes("counter").into()).await.unwrap().info.digest;
    let passthrough = manager.store_module(guests::component_bytes("passthrough").into()).await.unwrap().info.digest;
    let tagged = manager.store_module(guests::component_bytes("tagged-v1").into()).await.unwrap().info.digest;

    let stuck_cache = format!("{}?timeout_ms={REDIS_CALL_TIMEOUT_MS}", redis.url());
    let stuck = spec(&broker, "stuck", &counter, &stuck_cache);
    let free = spec(&broker, "free", &passthrough, "memory://");
    for spec in [&stuck, &free] {
        manager.apply(spec.clone()).await.expect("created");
        wait_owning(&manager, &spec.name).await;
    }

    // The stuck pipeline's function now waits on a frozen Redis, in the middle of a batch.
    redis.pause();
    produce(&broker.bootstrap(), &stuck.inputs[0], &[(0, Some(b"k"), b"{\"id\":1}", &[])]).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while manager.get_status(&stuck.name).await.unwrap().records_in == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the stuck pipeline never took its record");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pause = tokio::spawn({
        let (manager, name) = (manager.clone(), stuck.name.clone());
        async move { manager.pause(&name).await }
    });
    wait_for_state(&manager, &stuck.name, PipelineState::Stopping).await;

    // Meanwhile the other pipeline changes, and reads answer, while the pause waits.
    let reloaded = manager.reload(&free.name, &tagged).await.expect("reload of the other pipeline");
    assert_eq!(reloaded.pipeline.revision, 2);
    let mut updated = free.clone();
    updated.processing.batch_size = 7;
    updated.module = tagged.parse().expect("a module digest");
    manager.apply(updated).await.expect("update (a restart) of the other pipeline");
    let listed = manager.list().await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    manager.get(&stuck.name).await.expect("report of the stopping pipeline");
    assert!(!pause.is_finished(), "the pause of the stuck pipeline is still waiting for its stop");

    // The pause fails at the limit, naming the pipeline and the limit.
    let error = pause.await.unwrap().expect_err("the stop cannot end while Redis is frozen");
    match &error {
        ManagerError::StopTimeout { name, limit } => assert_eq!((name, *limit), (&stuck.name, STOP_LIMIT)),
        other => panic!("not a stop timeout: {other}"),
    }
    let message = error.to_string();
    assert!(message.contains(&stuck.name) && message.contains(&format!("{STOP_LIMIT:?}")), "{message}");
    assert_eq!(manager.summary(&stuck.name).await.unwrap().state, PipelineState::Stopping);

    // Once Redis answers, the call ends, the stop with it, and the pipeline is paused.
    redis.resume();
    wait_for_state(&manager, &stuck.name, PipelineState::Paused).await;
    let resumed = manager.resume(&stuck.name).await.expect("resume after the stop ended");
    assert_eq!(resumed.state, PipelineState::Running);
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_creates_of_one_name_make_one_pipeline_and_a_delete_racing_them_leaves_no_ghost() {
    let broker = TansuBroker::start();
    let data_dir = tempfile::tempdir().unwrap();
    let manager =
        PipelineManager::open(ManagerConfig::new(data_dir.path(), KafkaConfig::new(broker.bootstrap()))).await.unwrap();
    let passthrough = manager.store_module(guests::component_bytes("passthrough").into()).await.unwrap().info.digest;
    let spec = spec(&broker, "twice", &passthrough, "memory://");
    for round in 0..5 {
        let calls = [0, 1, 2].map(|n| {
            let (manager, spec) = (manager.clone(), spec.clone());
            tokio::spawn(async move {
                if n == 2 {
                    manager.delete(&spec.name).await.map(|()| "deleted")
                } else {
                    manager
                        .apply(spec)
                        .await
                        .map(|applied| if applied == Applied::Created { "created" } else { "applied" })
                }
            })
        });
        let mut outcomes = Vec::new();
        for call in calls {
            outcomes.push(match call.await.unwrap() {
                Ok(outcome) => outcome.to_string(),
                Err(ManagerError::NotFound { .. }) => "not found".to_string(),
                Err(e) => panic!("round {round}: {e}"),
            });
        }
        let listed: Vec<String> = manager.list().await.into_iter().map(|p| p.name).collect();
        let created = outcomes.iter().filter(|o| *o == "created").count();
        assert!(created >= 1, "round {round}: {outcomes:?}");
        // Whatever the order, the listing and the store agree with the last call.
        let exists = listed.contains(&spec.name);
        let stored = data_dir.path().join("pipelines").join(format!("{}.json", spec.name)).exists();
        assert_eq!(exists, stored, "round {round}: listed {listed:?}, stored {stored}, outcomes {outcomes:?}");
        if exists {
            manager.delete(&spec.name).await.expect("delete");
        }
        assert!(manager.list().await.is_empty(), "round {round}");
    }
    manager.shutdown().await;
}
