//! `sluice logs`: a pipeline's function log (what its function said, why its records
//! failed) on the node the client speaks to, once or followed.

use std::io::Write as _;

use sluice::api::{LogEntry, LogsQuery};

use crate::LogsArgs;

/// Prints the pipeline's function log entries that match, oldest first; with `--follow`,
/// then each new one as it comes, until interrupted or the pipeline is deleted.
pub fn logs(args: LogsArgs) -> anyhow::Result<()> {
    let client = args.client.client();
    let query = LogsQuery { since: args.since, level: args.level, limit: args.limit, follow: None };
    let json = args.client.json;
    if args.follow {
        let mut stdout = std::io::stdout().lock();
        client.follow_logs(&args.name, &query, &mut |entry| {
            let line = if json { serde_json::to_string(&entry).unwrap_or_default() } else { line(&entry) };
            // A closed stdout (`| head`) ends the command quietly.
            writeln!(stdout, "{line}").and_then(|()| stdout.flush()).is_ok()
        })?;
        return Ok(());
    }
    let list = client.logs(&args.name, &query)?;
    if json {
        return super::print_json(&list);
    }
    let mut stdout = std::io::stdout().lock();
    for entry in &list.entries {
        if writeln!(stdout, "{}", line(entry)).is_err() {
            return Ok(());
        }
    }
    if list.dropped > 0 {
        eprintln!(
            "(node {}: {} older entries were dropped; the log keeps the latest {})",
            list.node, list.dropped, list.capacity
        );
    }
    Ok(())
}

/// One entry as a line of text: time, level, where, who, message.
fn line(entry: &LogEntry) -> String {
    let place = match (&entry.topic, entry.partition, entry.offset) {
        (Some(topic), Some(partition), Some(offset)) => format!("{topic}/{partition}@{offset}"),
        (Some(topic), Some(partition), None) => format!("{topic}/{partition}"),
        _ => "-".to_owned(),
    };
    let revision = entry.revision.map_or_else(|| "-".to_owned(), |r| format!("r{r}"));
    let level = entry.level.as_str().to_ascii_uppercase();
    format!("{} {level:<5} {place} {revision} {}: {}", entry.time, entry.source.as_str(), entry.message)
}
