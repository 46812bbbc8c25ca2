//! `sluice ls` and `sluice status`: the pipelines, briefly, and one in full.

use sluice::api::{PartitionOffsets, PartitionStatus, PipelineList, PipelineReport, PipelineSummary};
use sluice::pipeline::spec::Guarantee;

use super::{cell, print_json, print_table, short, wire_name};
use crate::{ClientArgs, NameArgs};

/// Lists the pipelines.
pub fn ls(args: &ClientArgs) -> anyhow::Result<()> {
    let pipelines = args.client().list_pipelines()?;
    if args.json {
        return print_json(&PipelineList { pipelines });
    }
    let rows: Vec<Vec<String>> = pipelines.iter().map(summary_row).collect();
    print_table(&["NAME", "STATE", "REV", "MODULE", "INPUTS", "IN", "OUT", "FAILED", "OWNED", "LAG"], &rows)?;
    Ok(())
}

fn summary_row(p: &PipelineSummary) -> Vec<String> {
    vec![
        p.name.clone(),
        wire_name(&p.state),
        p.revision.to_string(),
        short(&p.module).to_string(),
        p.inputs.join(","),
        p.records_in.to_string(),
        p.records_out.to_string(),
        p.failed.to_string(),
        p.partitions.to_string(),
        p.lag.to_string(),
    ]
}

/// Shows a pipeline: state, module versions, counters, partitions, offsets and lag.
pub fn status(args: &NameArgs) -> anyhow::Result<()> {
    let p = args.client.client().get_pipeline(&args.name)?;
    if args.client.json {
        return print_json(&p);
    }
    let s = &p.status;
    outln!("pipeline   {}", p.name)?;
    outln!("state      {}{}", wire_name(&p.state), p.error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default())?;
    outln!("module     {} (revision {})", p.spec.module, p.revision)?;
    outln!("inputs     {}", p.spec.inputs.join(", "))?;
    outln!(
        "outputs    {}",
        p.spec.outputs.iter().map(|(name, topic)| format!("{name}={topic}")).collect::<Vec<_>>().join(", ")
    )?;
    outln!(
        "records    in {}  out {}  failed {}  dead letters {}  skipped {}",
        s.records_in,
        s.records_out,
        s.failed,
        s.dead_letters,
        s.skipped
    )?;
    if p.spec.processing.guarantee == Guarantee::ExactlyOnce {
        let t = &s.transactions;
        outln!(
            "delivery   exactly-once: {} transactions committed, {} aborted, {} replayed batches already applied",
            t.committed,
            t.aborted,
            t.effects_already_applied
        )?;
    }
    let faults = &s.faults;
    if faults.calls_failed_total() > 0 || faults.reruns > 0 || faults.instances_retired > 0 {
        let kinds: Vec<String> = faults.calls_failed.iter().map(|(kind, n)| format!("{kind} {n}")).collect();
        outln!(
            "faults     calls failed {} ({}), {} split, {} records run again, {} instances rebuilt, {} retired for memory",
            faults.calls_failed_total(),
            if kinds.is_empty() { "none".to_owned() } else { kinds.join(", ") },
            faults.bisections,
            faults.reruns,
            faults.instance_rebuilds,
            faults.instances_retired
        )?;
    }
    if let Some(error) = &s.last_error {
        outln!("last error {error}")?;
    }
    if s.delivery_failures > 0 {
        outln!("delivery   {} attempts to produce results failed and were made again", s.delivery_failures)?;
    }
    if s.consume_errors > 0 {
        outln!("consume    {} errors instead of records (each read again)", s.consume_errors)?;
    }
    if s.setup_failures > 0 {
        outln!("setup      {} attempts to set up a partition's worker failed (each made again)", s.setup_failures)?;
    }
    if s.worker_crashes > 0 {
        outln!("crashes    {} partition workers crashed and were started again", s.worker_crashes)?;
    }
    if s.commit_failures > 0 {
        let last = s.last_commit_error.as_deref().unwrap_or("unknown");
        outln!("commits    {} failed, the latest: {last}", s.commit_failures)?;
    }
    if let Some(stalled) = &s.stalled {
        outln!("stalled    it {stalled}")?;
    }
    if let Some(ms) = s.broker_unreachable_ms {
        outln!("broker     unreachable for {:.1} s", ms as f64 / 1000.0)?;
    }
    let cache = &s.cache;
    outln!(
        "cache      {} namespace {}  hits {}  misses {}  unavailable {}",
        cache.backend,
        cache.namespace,
        cache.stats.hits,
        cache.stats.misses,
        cache.stats.unavailable
    )?;
    outln!("\nversions")?;
    let versions: Vec<Vec<String>> = p
        .revisions
        .iter()
        .map(|r| {
            vec![
                r.revision.to_string(),
                short(r.module.as_str()).to_string(),
                if r.superseded {
                    format!("{} (superseded: never processed a record)", r.cause)
                } else {
                    r.cause.to_string()
                },
                r.deployed_at.to_string(),
            ]
        })
        .collect();
    print_table(&["REV", "MODULE", "CAUSE", "DEPLOYED (UNIX S)"], &versions)?;
    outln!("\npartitions")?;
    print_table(&["TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "WORKER", "MODULE"], &partition_rows(&p))?;
    if let Some(error) = &p.offsets_error {
        outln!("(offsets unavailable: {error})")?;
    }
    if !p.nodes.is_empty() {
        outln!("\nnodes")?;
        print_table(
            &["NODE", "STATE", "REVISION", "PARTITIONS", "RECORDS IN", "LAG"],
            &super::nodes::share_rows(&p.nodes),
        )?;
    }
    if let Some(rollout) = &p.rollout {
        outln!(
            "\nrevision {} {}: {} of {} nodes up run it, {} of {} owned partitions switched",
            rollout.revision,
            if rollout.complete { "complete" } else { "rolling out" },
            rollout.nodes_on_revision,
            rollout.nodes,
            rollout.partitions_switched,
            rollout.partitions
        )?;
    }
    Ok(())
}

/// The broker's view of every input partition, beside what this runtime knows of its
/// workers; when the broker does not answer, the runtime's own rows still show.
fn partition_rows(p: &PipelineReport) -> Vec<Vec<String>> {
    let workers = &p.status.partitions;
    let worker_of = |o: &PartitionOffsets| workers.iter().find(|w| w.topic == o.topic && w.partition == o.partition);
    let mut rows: Vec<Vec<String>> = p
        .offsets
        .iter()
        .map(|o| {
            let worker = worker_of(o);
            vec![
                o.topic.clone(),
                o.partition.to_string(),
                cell(o.committed),
                o.high_watermark.to_string(),
                o.lag.to_string(),
                worker.map_or("-".into(), worker_state),
                worker.map_or("-".into(), worker_module),
            ]
        })
        .collect();
    if p.offsets.is_empty() {
        rows.extend(workers.iter().map(|w| {
            vec![
                w.topic.clone(),
                w.partition.to_string(),
                format!("{} (stored here)", cell(w.next_offset)),
                "-".into(),
                cell(w.lag),
                worker_state(w),
                worker_module(w),
            ]
        }));
    }
    rows
}

/// A worker's state; `history` for a partition this runtime no longer owns.
fn worker_state(w: &PartitionStatus) -> String {
    if w.owned { wire_name(&w.state) } else { "history".into() }
}

/// The module of a worker's last batch, and its revision.
fn worker_module(w: &PartitionStatus) -> String {
    let module = w.module.as_deref().map_or("-".to_string(), |m| short(m).to_string());
    w.revision.map_or(module.clone(), |r| format!("{module} (rev {r})"))
}
