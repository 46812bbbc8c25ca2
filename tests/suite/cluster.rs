//! Cluster mode: several `sluice serve` processes on one broker (tansu) share one
//! registry kept in Kafka. A pipeline deployed through any node runs on every node, with its
//! partitions split between them; reloads reach every node and switch each partition once;
//! concurrent changes are ordered by the log; a late node catches up; a node that stops hands
//! its partitions over; a registry record that cannot be read is named and skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use sluice::api::{ClientError, PipelineReport, PipelineState};
use sluice::cluster::{ClusterConfig, CommitError, Control, DEFAULT_REGISTRY_TOPIC};
use sluice::engine::ModuleDigest;
use sluice::kafka::KafkaConfig;
use sluice::registry::pipelines::{PipelineRecord, RevisionCause};
use sluice_tests::cluster::{
    Cluster, PARTITIONS, WAIT, all_owned_run, api, deploy, input_id, owned, report, split_over_nodes, upload,
    wait_for_nodes,
};
use sluice_tests::guests;
use sluice_tests::kafka::{ConsumedRecord, ProduceRecord, TansuBroker, consume_all, consume_until, produce};
use sluice_tests::process::ServeProcess;

/// Records `id-n` for `n` in `range`, record `n` on partition `n % PARTITIONS`.
async fn produce_ids(bootstrap: &str, topic: &str, range: std::ops::Range<usize>) {
    let values: Vec<(i32, String, String)> =
        range.map(|n| ((n % PARTITIONS as usize) as i32, n.to_string(), format!("id-{n}"))).collect();
    let records: Vec<_> = values.iter().map(|(p, k, v)| (*p, Some(k.as_bytes()), v.as_bytes(), &[][..])).collect();
    produce(bootstrap, topic, &records).await;
}

/// Produces batches of ids until `stop`; `next` is the first id not produced yet.
fn keep_producing(
    bootstrap: String,
    topic: String,
    next: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let from = next.load(Ordering::Relaxed);
            produce_ids(&bootstrap, &topic, from..from + 30).await;
            next.store(from + 30, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    })
}

/// The input id of an output of the passthrough or tagged guests (`id-n` or `tag:id-n`).
fn id_of(record: &ConsumedRecord) -> usize {
    input_id(&record.value_text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_deployed_through_one_node_runs_on_every_node_with_its_partitions_split() {
    let cluster = Cluster::start(3);
    let started = Instant::now();
    let digest = deploy(&cluster.url(0), cluster.spec(), "passthrough").await;
    let reports = wait_for_nodes(&cluster, "every node running the pipeline", |reports| {
        reports.iter().all(|r| r.state == PipelineState::Running && r.spec.module.as_str() == digest)
    })
    .await;
    eprintln!("deploy to running on 3 nodes: {:?}", started.elapsed());
    assert!(reports.iter().all(|r| r.revision == 1));

    let reports = wait_for_nodes(&cluster, "the partitions split over the three nodes", split_over_nodes).await;
    eprintln!("deploy to every partition owned: {:?}", started.elapsed());
    let shares: Vec<Vec<i32>> = reports.iter().map(owned).collect();
    assert!(shares.iter().all(|share| !share.is_empty()), "every node owns some partitions: {shares:?}");

    produce_ids(&cluster.broker.bootstrap(), &cluster.input, 0..120).await;
    let outputs = consume_all(&cluster.broker.bootstrap(), &cluster.output, 120, WAIT).await;
    let ids: BTreeSet<usize> = outputs.iter().map(id_of).collect();
    assert_eq!(ids, (0..120).collect(), "every input came out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_through_another_node_under_load_switches_every_partition_once_and_loses_nothing() {
    let cluster = Cluster::start(3);
    let v1 = deploy(&cluster.url(0), cluster.spec(), "tagged-v1").await;
    wait_for_nodes(&cluster, "the partitions split over the nodes", split_over_nodes).await;

    let (next, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
    let producer = keep_producing(cluster.broker.bootstrap(), cluster.input.clone(), next.clone(), stop.clone());
    wait_for_nodes(&cluster, "v1 on every partition", |r| all_owned_run(r, &v1)).await;

    let started = Instant::now();
    let (name, module) = (cluster.name(), guests::component("tagged-v2"));
    let reloaded =
        api(&cluster.url(1), move |c| c.reload(&name, &module, &mut |_, _| {})).await.expect("reload through node 2");
    let v2 = reloaded.pipeline.module.clone();
    assert_eq!(reloaded.pipeline.revision, 2);
    let reports = wait_for_nodes(&cluster, "v2 on every partition of every node", |r| all_owned_run(r, &v2)).await;
    eprintln!("reload to switched everywhere on 3 nodes: {:?}", started.elapsed());
    assert!(reports.iter().all(|r| r.revision == 2 && r.spec.module.as_str() == v2), "every node on revision 2");
    // Every node's status says so too, from the heartbeats: each node's share and partitions.
    let reports = wait_for_nodes(&cluster, "the rollout of revision 2 complete in every status", |reports| {
        reports.iter().all(|r| r.rollout.as_ref().is_some_and(|o| o.complete && o.revision == 2 && o.nodes == 3))
    })
    .await;
    let shares = &reports[0].nodes;
    assert_eq!(shares.len(), 3, "three nodes share it: {shares:?}");
    let owned_in_shares: usize = shares.iter().map(|s| s.partitions.len()).sum();
    assert_eq!(owned_in_shares, PARTITIONS as usize);

    stop.store(true, Ordering::Relaxed);
    producer.await.unwrap();
    let produced = next.load(Ordering::Relaxed);
    let outputs = consume_all(&cluster.broker.bootstrap(), &cluster.output, produced, WAIT).await;
    let mut ids: Vec<usize> = outputs.iter().map(id_of).collect();
    ids.sort();
    assert_eq!(ids, (0..produced).collect::<Vec<_>>(), "each of the {produced} inputs comes out exactly once");

    // Each partition's outputs, in input order, come from v1, then from v2 from one offset on.
    let mut by_input: Vec<(i32, i64, String)> = outputs
        .iter()
        .map(|record| {
            let partition = (id_of(record) % PARTITIONS as usize) as i32;
            let offset = std::str::from_utf8(record.header("sluice.test.offset").expect("the input offset header"))
                .unwrap()
                .parse()
                .unwrap();
            let tag = record.value_text().split_once(':').map(|(tag, _)| tag.to_string()).unwrap();
            (partition, offset, tag)
        })
        .collect();
    by_input.sort();
    let mut runs: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    for (partition, _, tag) in by_input {
        let runs = runs.entry(partition).or_default();
        if runs.last() != Some(&tag) {
            runs.push(tag);
        }
    }
    for (partition, runs) in runs {
        assert_eq!(runs, ["v1", "v2"], "partition {partition} switches once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reloads_through_two_nodes_end_on_one_revision_everywhere_with_no_gap() {
    let cluster = Cluster::start(3);
    deploy(&cluster.url(0), cluster.spec(), "tagged-v1").await;
    let v1 = upload(&cluster.url(0), "tagged-v1").await;
    let v2 = upload(&cluster.url(1), "tagged-v2").await;
    wait_for_nodes(&cluster, "every node running the pipeline", |r| r.iter().all(|r| r.revision == 1)).await;

    // Rounds of two reloads at once, through node 1 and node 2, to two different modules:
    // of each pair, the second to reach the log is refused unless its node had read the
    // first before it began (it then applies on top of it).
    let v3 = upload(&cluster.url(0), "passthrough").await;
    let modules = [v1, v2, v3];
    let (mut accepted, mut conflicts) = (0, 0);
    for round in 0..8 {
        let calls = [0, 1].map(|node| {
            // Two different modules, so that the two changes differ.
            let target = modules[(round + node) % modules.len()].clone();
            let (url, name) = (cluster.url(node), cluster.name());
            tokio::spawn(async move { api(&url, move |c| c.reload_stored(&name, &target)).await })
        });
        for call in calls {
            match call.await.unwrap() {
                Ok(change) if change.applied == sluice::api::Applied::Unchanged => {}
                Ok(_) => accepted += 1,
                Err(ClientError::Api(failure)) if failure.status == 409 => {
                    assert!(failure.message.contains("revision"), "a 409 names the current revision: {failure:?}");
                    conflicts += 1;
                }
                Err(e) => panic!("round {round}: {e}"),
            }
        }
    }
    eprintln!("concurrent reloads: {accepted} applied, {conflicts} refused with 409");
    // Whether a revision was superseded is each node's own observation; the history is the same.
    let history = |r: &PipelineReport| -> Vec<(u64, String)> {
        r.revisions.iter().map(|v| (v.revision, v.module.to_string())).collect()
    };
    let reports = wait_for_nodes(&cluster, "every node on the same revision", |reports| {
        reports.iter().all(|r| r.revision == reports[0].revision && history(r) == history(&reports[0]))
    })
    .await;
    let revisions: Vec<u64> = reports[0].revisions.iter().map(|r| r.revision).collect();
    let expected: Vec<u64> = (revisions[0]..=revisions[revisions.len() - 1]).collect();
    assert_eq!(revisions, expected, "the history has no gap");
    assert_eq!(reports[0].revision, 1 + accepted, "one revision per applied reload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_after_the_deploys_catches_up_from_the_log_and_runs_the_pipeline() {
    let mut cluster = Cluster::start(2);
    deploy(&cluster.url(0), cluster.spec(), "tagged-v1").await;
    let v2 = upload(&cluster.url(1), "tagged-v2").await;
    let name = cluster.name();
    api(&cluster.url(1), move |c| c.reload_stored(&name, &v2)).await.expect("reload");
    let before = wait_for_nodes(&cluster, "both nodes on revision 2", |r| r.iter().all(|r| r.revision == 2)).await;

    // The late node reads the log from its start: the same pipeline, revision and history, and
    // it runs it (its consumer joins the pipeline's group). Which partitions it gets is the
    // group's business; tansu 0.6.0 sometimes leaves a group formed with nothing assigned
    // after a member joins (see `TansuBroker`), so the split over three nodes is asserted by
    // the tests that start them together.
    let late = cluster.add_node();
    let reports = wait_for_nodes(&cluster, "the late node running revision 2", |reports| {
        reports.iter().all(|r| r.revision == 2 && r.state == PipelineState::Running)
    })
    .await;
    let history = |r: &PipelineReport| -> Vec<(u64, String)> {
        r.revisions.iter().map(|v| (v.revision, v.module.to_string())).collect()
    };
    assert_eq!(history(&reports[late]), history(&before[0]), "the late node has the same history");
    assert_eq!(reports[late].spec, before[0].spec, "and the same spec");
    let log = cluster.nodes[late].as_ref().unwrap().log();
    assert!(log.contains("read the cluster's registry"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_hands_its_partitions_to_the_others_and_nothing_is_lost() {
    let mut cluster = Cluster::start(3);
    deploy(&cluster.url(0), cluster.spec(), "passthrough").await;
    wait_for_nodes(&cluster, "the partitions split over three nodes", split_over_nodes).await;
    let (next, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
    let producer = keep_producing(cluster.broker.bootstrap(), cluster.input.clone(), next.clone(), stop.clone());

    // SIGTERM: the node commits, leaves the group, and the two others take its partitions.
    cluster.nodes[2].take().unwrap().terminate();
    wait_for_nodes(&cluster, "two nodes owning every partition", split_over_nodes).await;

    // kill -9: the node comes back as the same member and takes its partitions back.
    cluster.nodes[1].as_mut().unwrap().kill_9();
    cluster.nodes[1] = Some(cluster.spawn(1));
    wait_for_nodes(&cluster, "the restarted node back in the group", |r| {
        split_over_nodes(r) && r.iter().all(|r| !owned(r).is_empty())
    })
    .await;

    stop.store(true, Ordering::Relaxed);
    producer.await.unwrap();
    let produced = next.load(Ordering::Relaxed);
    // Replays after the kill -9 come out twice: read until every input's output is seen, not
    // until as many records as inputs.
    let mut seen = BTreeSet::new();
    let outputs = consume_until(&cluster.broker.bootstrap(), &cluster.output, WAIT, |records| {
        seen.extend(records.last().map(id_of));
        seen.len() >= produced
    })
    .await;
    let ids: BTreeSet<usize> = outputs.iter().map(id_of).collect();
    let missing: Vec<usize> = (0..produced).filter(|id| !ids.contains(id)).collect();
    assert!(missing.is_empty(), "inputs lost: {missing:?} of {produced}");
    eprintln!("{produced} inputs, {} outputs ({} replayed after the kill -9)", outputs.len(), outputs.len() - produced);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_record_that_cannot_be_read_is_named_by_its_offset_and_the_rest_applied() {
    let mut cluster = Cluster::start(1);
    deploy(&cluster.url(0), cluster.spec(), "passthrough").await;
    let junk: Vec<ProduceRecord<'_>> =
        vec![(0, Some(b"pipeline/broken".as_slice()), b"{ not a change".as_slice(), &[])];
    let at = produce(&cluster.broker.bootstrap(), DEFAULT_REGISTRY_TOPIC, &junk).await[0].1;
    let second = json!({
        "name": "second", "inputs": [cluster.input], "outputs": { "default": cluster.output },
        "processing": { "on_failure": "skip" }
    });
    deploy(&cluster.url(0), second, "passthrough").await;

    let late = cluster.add_node();
    let deadline = Instant::now() + WAIT;
    let log = loop {
        let log = cluster.nodes[late].as_ref().unwrap().log();
        if log.contains("skipping a registry record") {
            break log;
        }
        assert!(Instant::now() < deadline, "no error line for the bad record:\n{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let line = log.lines().find(|l| l.contains("skipping a registry record")).unwrap();
    assert!(line.contains(&format!("offset {at}")) && line.contains("pipeline/broken"), "{line}");
    let listed = api(&cluster.url(late), |c| c.list_pipelines()).await.unwrap();
    let names: BTreeSet<String> = listed.iter().map(|p| p.name.clone()).collect();
    assert_eq!(names, BTreeSet::from([cluster.name(), "second".to_string()]), "the rest of the log is applied");

    // Each node counts the record it skipped, and sees both nodes up.
    for node in [0, late] {
        let deadline = Instant::now() + WAIT;
        loop {
            let metrics = api(&cluster.url(node), |c| c.metrics()).await.unwrap();
            let counted = metrics.lines().any(|l| l == "sluice_cluster_registry_skipped_total 1");
            if counted && metrics.lines().any(|l| l == r#"sluice_cluster_nodes{state="up"} 2"#) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {node} does not count the skipped record and both nodes:\n{metrics}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_changes_made_at_once_on_two_nodes_from_one_generation_the_log_takes_one_and_refuses_the_other() {
    let broker = TansuBroker::start();
    let kafka = KafkaConfig::new(broker.bootstrap());
    let (a, _a_events) = Control::join(&kafka, ClusterConfig::default(), "a").await.expect("node a joins");
    let (b, _b_events) = Control::join(&kafka, ClusterConfig::default(), "b").await.expect("node b joins");
    let spec = serde_json::from_value(json!({
        "name": "clicks", "inputs": ["clicks"], "outputs": {"default": "clicks.out"},
        "module": ModuleDigest::of(b"first")
    }))
    .unwrap();
    let created = PipelineRecord::new(spec);
    a.commit_pipeline("clicks", 1, Some(&created)).await.expect("the create is accepted");
    let deadline = Instant::now() + WAIT;
    while b.with_state(|s| s.pipeline("clicks").map(|e| e.generation)) != Some(1) {
        assert!(Instant::now() < deadline, "node b never read the create");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Both nodes reload from generation 1 at once: each proposes generation 2.
    let mut from_a = created.clone();
    from_a.push_revision(&ModuleDigest::of(b"from a"), RevisionCause::Reload, 10);
    let mut from_b = created.clone();
    from_b.push_revision(&ModuleDigest::of(b"from b"), RevisionCause::Reload, 10);
    let (on_a, on_b) =
        tokio::join!(a.commit_pipeline("clicks", 2, Some(&from_a)), b.commit_pipeline("clicks", 2, Some(&from_b)));
    let (winner, refused) = match (on_a, on_b) {
        (Ok(()), Err(refused)) => (from_a, refused),
        (Err(refused), Ok(())) => (from_b, refused),
        (a, b) => panic!("exactly one change is accepted: {a:?}, {b:?}"),
    };
    let CommitError::Conflict { name, generation, revision } = &refused else { panic!("{refused}") };
    assert_eq!((name.as_str(), *generation, *revision), ("clicks", 2, 2));
    assert!(refused.to_string().contains("now at revision 2"), "{refused}");

    // Both nodes hold the winner, and the log's last record of the pipeline is the winner's
    // (restated by the node refused), so a compacted topic keeps it.
    for node in [&a, &b] {
        let deadline = Instant::now() + WAIT;
        loop {
            let entry = node.with_state(|s| s.pipeline("clicks").cloned()).unwrap();
            if entry.generation == 2
                && entry.record.as_ref() == Some(&winner)
                && node.with_state(|s| s.unrestated().count()) == 0
            {
                break;
            }
            assert!(Instant::now() < deadline, "node {} does not hold the winner: {entry:?}", node.node());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Every node counts the refusal it read, for `/metrics`.
        assert_eq!(node.counters().stats().refused_changes, 1, "node {}", node.node());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_resume_and_delete_through_any_node_reach_every_node() {
    let cluster = Cluster::start(3);
    deploy(&cluster.url(0), cluster.spec(), "passthrough").await;
    wait_for_nodes(&cluster, "every node running", |r| r.iter().all(|r| r.state == PipelineState::Running)).await;

    let name = cluster.name();
    api(&cluster.url(1), move |c| c.pause(&name)).await.expect("pause through node 2");
    wait_for_nodes(&cluster, "every node paused", |r| {
        r.iter().all(|r| r.state == PipelineState::Paused && owned(r).is_empty())
    })
    .await;

    let name = cluster.name();
    api(&cluster.url(2), move |c| c.resume(&name)).await.expect("resume through node 3");
    wait_for_nodes(&cluster, "every node running again, partitions split", |r| {
        r.iter().all(|r| r.state == PipelineState::Running) && split_over_nodes(r)
    })
    .await;

    let name = cluster.name();
    api(&cluster.url(0), move |c| c.delete_pipeline(&name)).await.expect("delete through node 1");
    let deadline = Instant::now() + WAIT;
    for index in cluster.running() {
        while report(&cluster.url(index), &cluster.name()).await.is_some() {
            assert!(Instant::now() < deadline, "node {index} still has the pipeline");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_of_a_single_node_is_imported_into_the_cluster_once() {
    let mut cluster = Cluster::start(0);
    let data = cluster.data_dir(0);
    // A runtime on its own, with its registry in its data directory.
    let single =
        ServeProcess::start(&cluster.broker.bootstrap(), &data, &["--registry", "data-dir", "--node-id", "n1"]);
    let digest = deploy(single.url(), cluster.spec(), "passthrough").await;
    drop(single);

    // The same data directory started in cluster mode: its pipeline is imported, runs, and a
    // second node gets it from the log.
    cluster.add_node();
    cluster.add_node();
    wait_for_nodes(&cluster, "both nodes running the imported pipeline", |r| {
        r.iter().all(|r| r.state == PipelineState::Running && r.spec.module.as_str() == digest)
    })
    .await;
    assert!(data.join("pipelines.imported").join(format!("{}.json", cluster.name())).exists());
    let log = cluster.nodes[0].as_ref().unwrap().log();
    assert!(log.contains("pipeline imported from the data directory into the cluster"), "{log}");

    // Once: deleted through the cluster, it does not come back when the node restarts.
    let name = cluster.name();
    api(&cluster.url(1), move |c| c.delete_pipeline(&name)).await.expect("delete");
    cluster.nodes[0].take().unwrap().terminate();
    cluster.nodes[0] = Some(cluster.spawn(0));
    let listed = api(&cluster.url(0), |c| c.list_pipelines()).await.unwrap();
    assert!(listed.is_empty(), "not imported again: {listed:?}");
}
