//! `sluice pause`, `sluice resume` and `sluice rm`.

use serde::Serialize;
use serde_json::json;
use sluice::api::PipelineSummary;

use super::{print_json, short, wire_name};
use crate::{ClientArgs, NameArgs};

/// Pauses a pipeline: it stops, commits what it processed, and stays paused across restarts.
pub fn pause(args: &NameArgs) -> anyhow::Result<()> {
    let answer = args.client.client().pause(&args.name)?;
    print_summary(&args.client, "paused", &answer, &answer)
}

/// Resumes a paused pipeline from its committed offsets; on a running one, the blocked
/// partitions retry their record.
pub fn resume(args: &NameArgs) -> anyhow::Result<()> {
    let answer = args.client.client().resume(&args.name)?;
    print_summary(&args.client, "resumed", &answer, &answer)
}

/// Deletes a pipeline.
pub fn rm(args: &NameArgs) -> anyhow::Result<()> {
    args.client.client().delete_pipeline(&args.name)?;
    if args.client.json {
        outln!("{}", json!({ "deleted": args.name }))?;
    } else {
        outln!("pipeline {} deleted", args.name)?;
    }
    Ok(())
}

/// Prints `answer` with `--json`, else one line of what was done to `pipeline`.
pub fn print_summary(
    args: &ClientArgs,
    what: &str,
    answer: &impl Serialize,
    pipeline: &PipelineSummary,
) -> anyhow::Result<()> {
    if args.json {
        print_json(answer)
    } else {
        outln!(
            "pipeline {} {what}: {}, module {} (revision {})",
            pipeline.name,
            wire_name(&pipeline.state),
            short(&pipeline.module),
            pipeline.revision
        )?;
        Ok(())
    }
}
