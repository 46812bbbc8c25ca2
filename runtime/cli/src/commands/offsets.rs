//! `sluice offsets`: reset a paused pipeline's committed offsets.

use anyhow::Context as _;
use sluice::api::{OffsetList, StartPosition};

use super::{print_json, print_table};
use crate::OffsetsArgs;

/// Moves the pipeline's consumer group to `--reset` and shows the offsets committed.
pub fn offsets(args: OffsetsArgs) -> anyhow::Result<()> {
    let reset = match args.reset.as_str() {
        "earliest" => StartPosition::Earliest,
        "latest" => StartPosition::Latest,
        time => StartPosition::Timestamp(time.parse::<i64>().with_context(|| {
            format!("--reset {time:?}: expected earliest, latest or milliseconds since the Unix epoch")
        })?),
    };
    let offsets = args.client.client().reset_offsets(&args.name, reset)?;
    if args.client.json {
        return print_json(&OffsetList { offsets });
    }
    let rows: Vec<Vec<String>> =
        offsets.iter().map(|o| vec![o.topic.clone(), o.partition.to_string(), o.offset.to_string()]).collect();
    print_table(&["TOPIC", "PARTITION", "COMMITTED"], &rows)?;
    Ok(())
}
