//! `/metrics`: the runtime's counters in the Prometheus text format.
//!
//! Nothing here counts: pipelines, caches and the engine keep their own lock-free counters,
//! and a scrape reads them ([`PipelineManager::statuses`], [`sluice_engine::EngineStats`]) and
//! encodes them with the `prometheus` crate's text encoder. Metrics are named
//! `sluice_<subject>_<what>[_unit][_total]`; every pipeline metric has a `pipeline` label.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `sluice_pipeline_up` (1 running, 0 paused, failed or stalled) | gauge | pipeline, state |
//! | `sluice_pipeline_stalled` (1 when it owns no partition while its group's records wait) | gauge | pipeline |
//! | `sluice_pipeline_partitions_owned` | gauge | pipeline |
//! | `sluice_pipeline_partitions_blocked` (held at a failed record under the `block` policy) | gauge | pipeline |
//! | `sluice_pipeline_broker_outages_total` | counter | pipeline |
//! | `sluice_pipeline_broker_unreachable` (1 during an outage) | gauge | pipeline |
//! | `sluice_pipeline_commit_failures_total` (offset commits refused or lost) | counter | pipeline |
//! | `sluice_pipeline_delivery_failures_total` (produce attempts failed and made again) | counter | pipeline |
//! | `sluice_pipeline_consume_errors_total` (errors the consumer gave instead of a record) | counter | pipeline |
//! | `sluice_pipeline_setup_failures_total` (failed attempts to set up a partition's worker) | counter | pipeline |
//! | `sluice_pipeline_worker_crashes_total` (partition workers that panicked and were started again) | counter | pipeline |
//! | `sluice_pipeline_revision` | gauge | pipeline |
//! | `sluice_pipeline_records_in_total`, `_records_out_total`, `_batches_total` | counter | pipeline |
//! | `sluice_pipeline_errors_total`, `_dead_letters_total`, `_skipped_total` | counter | pipeline |
//! | `sluice_pipeline_transactions_committed_total`, `_transactions_aborted_total`, `_effects_already_applied_total` | counter | pipeline |
//! | `sluice_pipeline_calls_failed_total` (traps and limits: `trap`, `cpu-limit`, `memory-limit`, ...) | counter | pipeline, kind |
//! | `sluice_pipeline_bisections_total`, `_reruns_total`, `_instance_rebuilds_total`, `_instances_retired_total` | counter | pipeline |
//! | `sluice_pipeline_batch_duration_seconds` | histogram | pipeline |
//! | `sluice_pipeline_lag_records` | gauge | pipeline, topic, partition |
//! | `sluice_cache_hits_total`, `_misses_total`, `_writes_total`, `_unavailable_total`, `_errors_total`, `_outages_total` | counter | pipeline, backend |
//! | `sluice_cache_call_duration_seconds` | histogram | pipeline, backend |
//! | `sluice_engine_instances`, `sluice_engine_memory_bytes` | gauge | |
//! | `sluice_engine_modules_compiled_total`, `_modules_from_artifacts_total` | counter | |
//! | `sluice_engine_compile_seconds_total` | counter | |
//! | `sluice_cluster_nodes` (nodes by state: up, gone, left) | gauge | state |
//! | `sluice_cluster_registry_skipped_total`, `_changes_refused_total`, `_read_outages_total` | counter | |
//! | `sluice_cluster_heartbeats_skipped_total`, `_heartbeat_outages_total` | counter | |

use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{Encoder as _, TextEncoder};

use sluice_cache::{LATENCY_BUCKET_BOUNDS_MICROS, LatencySnapshot};
use sluice_pipeline::FailureKind;
use sluice_pipeline::cluster::status::NodeState;
use sluice_pipeline::manager::{PipelineManager, PipelineState};

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The families of one scrape, built up metric by metric.
#[derive(Default)]
struct Families(Vec<MetricFamily>);

impl Families {
    fn family(&mut self, name: &str, help: &str, kind: MetricType) -> &mut MetricFamily {
        if let Some(index) = self.0.iter().position(|f| f.name() == name) {
            return &mut self.0[index];
        }
        let mut family = MetricFamily::default();
        family.set_name(name.to_string());
        family.set_help(help.to_string());
        family.set_field_type(kind);
        self.0.push(family);
        self.0.last_mut().expect("just pushed")
    }

    fn push(&mut self, name: &str, help: &str, kind: MetricType, labels: &[(&str, &str)], value: f64) {
        let mut metric = with_labels(labels);
        match kind {
            MetricType::COUNTER => {
                let mut counter = proto::Counter::default();
                counter.set_value(value);
                metric.set_counter(counter);
            }
            _ => {
                let mut gauge = proto::Gauge::default();
                gauge.set_value(value);
                metric.set_gauge(gauge);
            }
        }
        self.family(name, help, kind).mut_metric().push(metric);
    }

    fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: u64) {
        self.push(name, help, MetricType::COUNTER, labels, value as f64);
    }

    fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.push(name, help, MetricType::GAUGE, labels, value);
    }

    fn histogram(&mut self, name: &str, help: &str, labels: &[(&str, &str)], latency: &LatencySnapshot) {
        let mut histogram = proto::Histogram::default();
        histogram.set_sample_count(latency.count);
        histogram.set_sample_sum(latency.total_nanos as f64 / 1e9);
        let mut cumulative = 0;
        let buckets = LATENCY_BUCKET_BOUNDS_MICROS
            .iter()
            .zip(latency.buckets)
            .map(|(&bound, count)| {
                cumulative += count;
                let mut bucket = proto::Bucket::default();
                bucket.set_upper_bound(bound as f64 / 1e6);
                bucket.set_cumulative_count(cumulative);
                bucket
            })
            .collect();
        histogram.set_bucket(buckets);
        let mut metric = with_labels(labels);
        metric.set_histogram(histogram);
        self.family(name, help, MetricType::HISTOGRAM).mut_metric().push(metric);
    }
}

fn with_labels(labels: &[(&str, &str)]) -> proto::Metric {
    let mut metric = proto::Metric::default();
    metric.set_label(
        labels
            .iter()
            .map(|(name, value)| {
                let mut pair = proto::LabelPair::default();
                pair.set_name(name.to_string());
                pair.set_value(value.to_string());
                pair
            })
            .collect(),
    );
    metric
}

/// Every metric of the runtime, in the Prometheus text format.
pub async fn render(manager: &PipelineManager) -> String {
    let mut f = Families::default();
    for (summary, status) in manager.statuses().await {
        let p = [("pipeline", summary.name.as_str())];
        let state = match summary.state {
            PipelineState::Running => "running",
            PipelineState::Paused => "paused",
            PipelineState::Failed => "failed",
            PipelineState::Stalled => "stalled",
            PipelineState::Stopping => "stopping",
        };
        let up = f64::from(u8::from(summary.state == PipelineState::Running));
        f.gauge("sluice_pipeline_up", "1 when the pipeline runs.", &[p[0], ("state", state)], up);
        f.gauge("sluice_pipeline_revision", "The pipeline's module revision.", &p, summary.revision as f64);
        let stalled = f64::from(u8::from(status.stalled.is_some()));
        f.gauge(
            "sluice_pipeline_stalled",
            "1 when the pipeline owns no partition while its records wait.",
            &p,
            stalled,
        );
        f.gauge(
            "sluice_pipeline_partitions_owned",
            "Partitions this runtime owns.",
            &p,
            status.owned_partitions as f64,
        );
        f.gauge(
            "sluice_pipeline_partitions_blocked",
            "Partitions held at a failed record under the block policy.",
            &p,
            status.blocked_partitions() as f64,
        );
        f.counter(
            "sluice_pipeline_broker_outages_total",
            "Times the cluster became unreachable.",
            &p,
            status.broker_outages,
        );
        let unreachable = f64::from(u8::from(status.broker_unreachable_ms.is_some()));
        f.gauge("sluice_pipeline_broker_unreachable", "1 while the cluster is unreachable.", &p, unreachable);
        f.counter(
            "sluice_pipeline_delivery_failures_total",
            "Attempts to produce a batch's outputs and dead letters that failed and were made again.",
            &p,
            status.delivery_failures,
        );
        f.counter(
            "sluice_pipeline_consume_errors_total",
            "Errors the consumer gave a partition's worker instead of a record.",
            &p,
            status.consume_errors,
        );
        f.counter(
            "sluice_pipeline_setup_failures_total",
            "Failed attempts to set up a partition's worker (exactly-once: its transactional producer or applied position).",
            &p,
            status.setup_failures,
        );
        f.counter(
            "sluice_pipeline_worker_crashes_total",
            "Partition workers that crashed (a runtime bug) and were started again from the first record not done.",
            &p,
            status.worker_crashes,
        );
        f.counter(
            "sluice_pipeline_commit_failures_total",
            "Offset commits that failed; records since the last good one are processed again after a rebalance.",
            &p,
            status.commit_failures,
        );
        f.counter("sluice_pipeline_records_in_total", "Records consumed.", &p, status.records_in);
        f.counter("sluice_pipeline_records_out_total", "Outputs produced and acknowledged.", &p, status.records_out);
        f.counter("sluice_pipeline_batches_total", "Batches processed.", &p, status.batches);
        f.counter("sluice_pipeline_errors_total", "Records that failed for good.", &p, status.failed);
        f.counter(
            "sluice_pipeline_dead_letters_total",
            "Records written to the dead-letter topic.",
            &p,
            status.dead_letters,
        );
        f.counter("sluice_pipeline_skipped_total", "Failed records skipped.", &p, status.skipped);
        let transactions = &status.transactions;
        f.counter(
            "sluice_pipeline_transactions_committed_total",
            "Exactly-once batches committed in a Kafka transaction.",
            &p,
            transactions.committed,
        );
        f.counter(
            "sluice_pipeline_transactions_aborted_total",
            "Exactly-once transactions aborted and tried again.",
            &p,
            transactions.aborted,
        );
        f.counter(
            "sluice_pipeline_effects_already_applied_total",
            "Exactly-once batches run again whose cache writes had been applied, and were not applied twice.",
            &p,
            transactions.effects_already_applied,
        );
        let faults = &status.faults;
        for kind in FailureKind::ALL {
            let FailureKind::Batch(kind) = kind else { continue };
            let kind = kind.as_str();
            f.counter(
                "sluice_pipeline_calls_failed_total",
                "Function calls that failed as a whole (a trap or a limit), by kind; their records were run again.",
                &[p[0], ("kind", kind)],
                faults.calls_failed.get(kind).copied().unwrap_or(0),
            );
        }
        f.counter(
            "sluice_pipeline_bisections_total",
            "Failed calls split in halves to find the records at fault.",
            &p,
            faults.bisections,
        );
        f.counter(
            "sluice_pipeline_reruns_total",
            "Records processed again after a failed attempt (a split call or a retry).",
            &p,
            faults.reruns,
        );
        f.counter(
            "sluice_pipeline_instance_rebuilds_total",
            "Function instances built again after a failed call discarded theirs.",
            &p,
            faults.instance_rebuilds,
        );
        f.counter(
            "sluice_pipeline_instances_retired_total",
            "Function instances retired after a call for the memory they had grown to (a leak), before it trapped.",
            &p,
            faults.instances_retired,
        );
        f.histogram(
            "sluice_pipeline_batch_duration_seconds",
            "Time from a batch's first record to its results acknowledged.",
            &p,
            &status.batch_latency,
        );
        for partition in &status.partitions {
            if let Some(lag) = partition.lag {
                let id = partition.partition.to_string();
                let labels = [p[0], ("topic", partition.topic.as_str()), ("partition", id.as_str())];
                f.gauge("sluice_pipeline_lag_records", "Records behind the partition's end.", &labels, lag as f64);
            }
        }
        let c = &status.cache.stats;
        let labels = [p[0], ("backend", status.cache.backend.as_str())];
        f.counter("sluice_cache_hits_total", "Cache keys found.", &labels, c.hits);
        f.counter("sluice_cache_misses_total", "Cache keys missing.", &labels, c.misses);
        f.counter("sluice_cache_writes_total", "Cache write calls.", &labels, c.writes);
        f.counter("sluice_cache_unavailable_total", "Cache calls failed as unavailable.", &labels, c.unavailable);
        f.counter("sluice_cache_errors_total", "Cache calls failed otherwise.", &labels, c.errors);
        f.counter("sluice_cache_outages_total", "Times the cache became unavailable.", &labels, c.outages);
        f.histogram("sluice_cache_call_duration_seconds", "Cache backend call latency.", &labels, &c.latency);
    }
    let e = manager.engine().stats().snapshot();
    f.gauge("sluice_engine_instances", "Function instances alive.", &[], e.instances as f64);
    f.gauge("sluice_engine_memory_bytes", "Linear memory held by function instances.", &[], e.memory_bytes as f64);
    f.counter("sluice_engine_modules_compiled_total", "Modules compiled from their bytes.", &[], e.modules_compiled);
    f.counter(
        "sluice_engine_modules_from_artifacts_total",
        "Modules loaded from the compiled-artifact cache.",
        &[],
        e.modules_from_artifacts,
    );
    let compile_seconds = e.compile_nanos as f64 / 1e9;
    f.push(
        "sluice_engine_compile_seconds_total",
        "Time spent compiling or loading modules.",
        MetricType::COUNTER,
        &[],
        compile_seconds,
    );
    if let Some(nodes) = manager.cluster_nodes() {
        for state in [NodeState::Up, NodeState::Gone, NodeState::Left] {
            let count = nodes.iter().filter(|n| n.state == state).count();
            f.gauge(
                "sluice_cluster_nodes",
                "Nodes of the cluster, by state.",
                &[("state", state.as_str())],
                count as f64,
            );
        }
    }
    if let Some(c) = manager.control_stats() {
        f.counter(
            "sluice_cluster_registry_skipped_total",
            "Registry records skipped because they cannot be read.",
            &[],
            c.skipped_records,
        );
        f.counter(
            "sluice_cluster_changes_refused_total",
            "Changes the registry refused because another came first (409).",
            &[],
            c.refused_changes,
        );
        f.counter(
            "sluice_cluster_read_outages_total",
            "Times reading a control topic began failing.",
            &[],
            c.read_outages,
        );
        f.counter(
            "sluice_cluster_heartbeats_skipped_total",
            "Heartbeats skipped because they cannot be read.",
            &[],
            c.skipped_heartbeats,
        );
        f.counter(
            "sluice_cluster_heartbeat_outages_total",
            "Times publishing this node's heartbeat began failing.",
            &[],
            c.heartbeat_outages,
        );
    }
    let mut text = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&f.0, &mut text) {
        tracing::error!("cannot encode metrics: {e}");
    }
    String::from_utf8(text).unwrap_or_default()
}
