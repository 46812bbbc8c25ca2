//! The checker of the chaos suite (`make chaos`, `tests/chaos/`): given what a scenario wrote
//! to a pipeline's input topic, what the pipeline wrote to its output and dead-letter topics,
//! and the faults the harness injected, it counts what went wrong. It only reads values; the
//! suite's driver owns the broker, the runtime and the faults.
//!
//! # Records
//!
//! Every input record has a key (one of a few dozen) and a JSON object value
//! `{"id":I,"seq":S}`: `I` is unique across the suite, `S` counts the key's records from 0 in
//! the order they were written. A key's records all go to one input partition, so their input
//! offsets follow `S`. Outputs carry the same `id` and `seq` (and, from the counter guest, the
//! key's `count`); the sink's partitioner hashes the key, so a key's outputs share one output
//! partition and a consumer sees them in output-offset order.
//!
//! # What is counted, per scenario
//!
//! - **lost**: an input id that never appears on the output topic or the dead-letter topic.
//! - **duplicated**: every output of an id beyond as many as the input topic holds (normally
//!   one). A duplicate is *within an uncommitted batch* when the runtime may legitimately have
//!   replayed it: some fault happened after the id's first output was created and no later than
//!   the duplicate was created (by the outputs' create timestamps), and the id's input offset was
//!   at or after the consumer group's committed offset of its partition when that fault hit.
//!   Any other duplicate is counted apart as *outside uncommitted batches*: the delivery
//!   guarantee does not allow it.
//! - **out-of-order**: walking a key's outputs in output-offset order and skipping duplicates
//!   (a duplicate is counted once, as a duplicate, never also as out of order), an output whose
//!   `seq` is lower than a `seq` already seen for the key. Replaying an uncommitted batch
//!   therefore never counts as out of order; emitting a later record before an earlier one does.
//! - **dead letters**: records on the dead-letter topic.
//! - **recovery**: for each fault, from the moment the harness ended it (restarted the runtime
//!   or the broker, let the cache server run again) to the create time of the first output
//!   created after that moment; the median and the worst over the scenario's faults. A fault
//!   after which no output was created has no recovery time and is reported as such.
//! - **over-counted increments** (outputs that carry `count`): for each key, its highest count
//!   minus the number of its distinct records that reached the output. At-least-once delivery
//!   lets a retried record increment its counter again, so this is the cache's share of the
//!   duplicates, shown rather than hidden; a negative value would mean increments were lost.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

/// A record of a scenario's input topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key.
    pub key: String,
    /// The unique id in its value.
    pub id: u64,
    /// The key's sequence number in its value.
    pub seq: u64,
}

/// A record of a scenario's output topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its create time (milliseconds since the Unix epoch), set by the runtime's producer.
    pub created_ms: i64,
    /// Its key.
    pub key: String,
    /// The id of the input it came from.
    pub id: u64,
    /// The sequence number of the input it came from.
    pub seq: u64,
    /// The key's count, from the counter guest.
    pub count: Option<i64>,
}

/// A fault the harness injected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// When it hit (milliseconds since the Unix epoch).
    pub at_ms: i64,
    /// When the harness ended it: restarted what it stopped, resumed what it froze.
    pub ended_ms: i64,
    /// The pipeline group's committed offsets on the input topic, by partition, when it hit.
    pub committed: BTreeMap<i32, i64>,
}

/// What the checker found in one scenario.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Input records.
    pub records: usize,
    /// Output records, duplicates included.
    pub outputs: usize,
    /// Input ids found on neither the output nor the dead-letter topic.
    pub lost: usize,
    /// A few of the lost ids, for the failure message.
    pub lost_sample: Vec<u64>,
    /// Outputs beyond one per input record.
    pub duplicated: usize,
    /// Of `duplicated`, those no fault explains (see the module documentation).
    pub duplicated_outside_uncommitted: usize,
    /// Outputs emitted after a later record of the same key.
    pub out_of_order: usize,
    /// Records on the dead-letter topic.
    pub dead_letters: usize,
    /// Input ids written more than once (by the load generator's producer, not the runtime).
    pub input_duplicates: usize,
    /// Per fault, the time from its end to the first output created after it.
    pub recoveries: Vec<Option<Duration>>,
    /// Over-counted increments of the counter guest (`None` when outputs carry no count).
    pub over_counted: Option<i64>,
}

impl Report {
    /// The median recovery time over the faults that recovered.
    pub fn recovery_median(&self) -> Option<Duration> {
        let mut times: Vec<Duration> = self.recoveries.iter().flatten().copied().collect();
        times.sort();
        match times.len() {
            0 => None,
            n if n % 2 == 1 => Some(times[n / 2]),
            n => Some((times[n / 2 - 1] + times[n / 2]) / 2),
        }
    }

    /// The worst recovery time, or `None` if a fault never recovered or there were none.
    pub fn recovery_worst(&self) -> Option<Duration> {
        if self.recoveries.iter().any(Option::is_none) {
            return None;
        }
        self.recoveries.iter().flatten().max().copied()
    }

    /// Faults after which no output was created.
    pub fn unrecovered(&self) -> usize {
        self.recoveries.iter().filter(|r| r.is_none()).count()
    }
}

/// Counts what went wrong in a scenario: `inputs` as read back from the input topic, `outputs`
/// in any order (they are sorted by partition and offset here), `dead_letter_ids` the ids of
/// the dead-letter topic's records, `faults` in the order they were injected.
pub fn check(inputs: &[Input], outputs: &[Output], dead_letter_ids: &[u64], faults: &[Fault]) -> Report {
    let mut report = Report {
        records: inputs.len(),
        outputs: outputs.len(),
        dead_letters: dead_letter_ids.len(),
        ..Report::default()
    };
    let mut written: HashMap<u64, (usize, &Input)> = HashMap::with_capacity(inputs.len());
    for input in inputs {
        let entry = written.entry(input.id).or_insert((0, input));
        entry.0 += 1;
        if entry.0 > 1 {
            report.input_duplicates += 1;
        }
    }

    let mut sorted: Vec<&Output> = outputs.iter().collect();
    sorted.sort_by_key(|o| (o.partition, o.offset));
    let mut first_created: HashMap<u64, (usize, i64)> = HashMap::with_capacity(inputs.len());
    let mut highest_seq: HashMap<&str, u64> = HashMap::new();
    let mut distinct_per_key: HashMap<&str, i64> = HashMap::new();
    let mut highest_count: HashMap<&str, i64> = HashMap::new();
    for output in &sorted {
        if let Some(count) = output.count {
            let highest = highest_count.entry(&output.key).or_insert(count);
            *highest = (*highest).max(count);
        }
        let seen = first_created.entry(output.id).or_insert((0, output.created_ms));
        seen.0 += 1;
        let allowed = written.get(&output.id).map_or(1, |(copies, _)| *copies);
        if seen.0 > allowed {
            report.duplicated += 1;
            let replayed = written.get(&output.id).is_some_and(|(_, input)| {
                faults.iter().any(|fault| {
                    seen.1 <= fault.at_ms
                        && fault.at_ms <= output.created_ms
                        && fault.committed.get(&input.partition).is_none_or(|&committed| input.offset >= committed)
                })
            });
            if !replayed {
                report.duplicated_outside_uncommitted += 1;
            }
            continue;
        }
        *distinct_per_key.entry(&output.key).or_default() += 1;
        let highest = highest_seq.entry(&output.key).or_insert(output.seq);
        if output.seq < *highest {
            report.out_of_order += 1;
        } else {
            *highest = output.seq;
        }
    }

    let dead: std::collections::HashSet<u64> = dead_letter_ids.iter().copied().collect();
    let mut lost: Vec<u64> =
        written.keys().filter(|id| !first_created.contains_key(id) && !dead.contains(id)).copied().collect();
    lost.sort_unstable();
    report.lost = lost.len();
    report.lost_sample = lost.into_iter().take(10).collect();

    let created: Vec<i64> = {
        let mut created: Vec<i64> = outputs.iter().map(|o| o.created_ms).collect();
        created.sort_unstable();
        created
    };
    report.recoveries = faults
        .iter()
        .map(|fault| {
            let first_after = created.partition_point(|&c| c < fault.ended_ms);
            created.get(first_after).map(|&c| Duration::from_millis((c - fault.ended_ms) as u64))
        })
        .collect();

    if !highest_count.is_empty() {
        report.over_counted = Some(
            highest_count.iter().map(|(key, count)| count - distinct_per_key.get(key).copied().unwrap_or(0)).sum(),
        );
    }
    report
}

/// One row of the printed table: a scenario's name, what was done to it, and its report.
#[derive(Debug, Clone)]
pub struct Row {
    /// The scenario.
    pub scenario: String,
    /// The faults, e.g. `8 x kill -9`.
    pub faults: String,
    /// What the checker found.
    pub report: Report,
}

/// The table of every scenario, one row each, with a header.
pub fn table(rows: &[Row]) -> String {
    let header = [
        "scenario",
        "faults",
        "records",
        "outputs",
        "lost",
        "duplicated",
        "(outside uncommitted)",
        "out-of-order",
        "dead letters",
        "recovery median",
        "recovery worst",
        "over-counted incr",
    ];
    let seconds = |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("{:.2} s", d.as_secs_f64()));
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let r = &row.report;
            let worst = match (r.recovery_worst(), r.unrecovered()) {
                (_, 0) => seconds(r.recovery_worst()),
                (_, n) => format!("{n} never"),
            };
            vec![
                row.scenario.clone(),
                row.faults.clone(),
                r.records.to_string(),
                r.outputs.to_string(),
                r.lost.to_string(),
                r.duplicated.to_string(),
                r.duplicated_outside_uncommitted.to_string(),
                r.out_of_order.to_string(),
                r.dead_letters.to_string(),
                seconds(r.recovery_median()),
                worst,
                r.over_counted.map_or("-".to_string(), |n| n.to_string()),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| cells.iter().map(|row| row[i].len()).chain([header[i].len()]).max().unwrap_or(0))
        .collect();
    let mut text = String::new();
    let mut line = |values: Vec<&str>| {
        let padded: Vec<String> = values.iter().zip(&widths).map(|(v, w)| format!("{v:<w$}")).collect();
        let _ = writeln!(text, "| {} |", padded.join(" | "));
    };
    line(header.to_vec());
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(rule.iter().map(String::as_str).collect());
    for row in &cells {
        line(row.iter().map(String::as_str).collect());
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(partition: i32, offset: i64, key: &str, id: u64, seq: u64) -> Input {
        Input { partition, offset, key: key.into(), id, seq }
    }

    fn output(offset: i64, created_ms: i64, key: &str, id: u64, seq: u64) -> Output {
        Output { partition: 0, offset, created_ms, key: key.into(), id, seq, count: None }
    }

    fn fault(at_ms: i64, committed: i64) -> Fault {
        Fault { at_ms, ended_ms: at_ms + 10, committed: BTreeMap::from([(0, committed)]) }
    }

    /// Key `a`, ids 0..4 at input offsets 0..4.
    fn four_inputs() -> Vec<Input> {
        (0..4).map(|n| input(0, n as i64, "a", n, n)).collect()
    }

    #[test]
    fn a_clean_run_counts_nothing() {
        let outputs: Vec<Output> = (0..4).map(|n| output(n as i64, 100 + n as i64, "a", n, n)).collect();
        let report = check(&four_inputs(), &outputs, &[], &[]);
        assert_eq!(
            (report.records, report.outputs, report.lost, report.duplicated, report.out_of_order),
            (4, 4, 0, 0, 0)
        );
        assert_eq!(report.over_counted, None);
    }

    #[test]
    fn an_id_on_neither_topic_is_lost_but_a_dead_letter_is_not() {
        let outputs = vec![output(0, 100, "a", 0, 0), output(1, 101, "a", 2, 2)];
        let report = check(&four_inputs(), &outputs, &[1], &[]);
        assert_eq!((report.lost, report.lost_sample.clone(), report.dead_letters), (1, vec![3], 1));
    }

    #[test]
    fn a_replay_of_uncommitted_records_after_a_fault_is_a_duplicate_within_an_uncommitted_batch() {
        // 0..3 out before the fault at 200 with offset 2 committed; 2 and 3 replayed after it.
        let outputs = vec![
            output(0, 100, "a", 0, 0),
            output(1, 101, "a", 1, 1),
            output(2, 102, "a", 2, 2),
            output(3, 103, "a", 3, 3),
            output(4, 300, "a", 2, 2),
            output(5, 300, "a", 3, 3),
        ];
        let report = check(&four_inputs(), &outputs, &[], &[fault(200, 2)]);
        assert_eq!((report.duplicated, report.duplicated_outside_uncommitted, report.out_of_order), (2, 0, 0));
    }

    #[test]
    fn a_duplicate_of_a_committed_record_or_without_a_fault_is_outside_uncommitted_batches() {
        let outputs = vec![output(0, 100, "a", 0, 0), output(1, 101, "a", 1, 1), output(2, 300, "a", 0, 0)];
        let committed_past_it = check(&four_inputs()[..2], &outputs, &[], &[fault(200, 1)]);
        assert_eq!((committed_past_it.duplicated, committed_past_it.duplicated_outside_uncommitted), (1, 1));
        let no_fault = check(&four_inputs()[..2], &outputs, &[], &[]);
        assert_eq!((no_fault.duplicated, no_fault.duplicated_outside_uncommitted), (1, 1));
        let fault_before_both = check(&four_inputs()[..2], &outputs, &[], &[fault(50, 0)]);
        assert_eq!(fault_before_both.duplicated_outside_uncommitted, 1);
    }

    #[test]
    fn a_later_record_emitted_before_an_earlier_one_is_out_of_order() {
        let outputs = vec![output(0, 100, "a", 0, 0), output(1, 101, "a", 2, 2), output(2, 102, "a", 1, 1)];
        let report = check(&four_inputs()[..3], &outputs, &[], &[]);
        assert_eq!((report.out_of_order, report.duplicated, report.lost), (1, 0, 0));
    }

    #[test]
    fn orders_are_per_key_and_follow_output_offsets_not_the_order_given() {
        let inputs = vec![input(0, 0, "a", 0, 0), input(1, 0, "b", 1, 0), input(0, 1, "a", 2, 1)];
        let outputs = vec![output(2, 102, "a", 2, 1), output(1, 101, "b", 1, 0), output(0, 100, "a", 0, 0)];
        assert_eq!(check(&inputs, &outputs, &[], &[]).out_of_order, 0);
    }

    #[test]
    fn recovery_is_from_the_end_of_each_fault_to_the_first_output_created_after_it() {
        let outputs = vec![output(0, 100, "a", 0, 0), output(1, 1_500, "a", 1, 1), output(2, 2_300, "a", 2, 2)];
        let faults = vec![
            Fault { at_ms: 150, ended_ms: 200, committed: BTreeMap::new() },
            Fault { at_ms: 1_600, ended_ms: 1_700, committed: BTreeMap::new() },
            Fault { at_ms: 3_000, ended_ms: 3_100, committed: BTreeMap::new() },
        ];
        let report = check(&four_inputs()[..3], &outputs, &[], &faults);
        assert_eq!(report.recoveries, vec![Some(Duration::from_millis(1_300)), Some(Duration::from_millis(600)), None]);
        assert_eq!(report.recovery_median(), Some(Duration::from_millis(950)));
        assert_eq!((report.recovery_worst(), report.unrecovered()), (None, 1));
    }

    #[test]
    fn counts_beyond_the_records_of_a_key_are_over_counted_increments() {
        let mut outputs: Vec<Output> = (0..3).map(|n| output(n as i64, 100, "a", n, n)).collect();
        for (output, count) in outputs.iter_mut().zip([1, 3, 4]) {
            output.count = Some(count);
        }
        let report = check(&four_inputs()[..3], &outputs, &[], &[]);
        assert_eq!(report.over_counted, Some(1));
    }

    #[test]
    fn the_table_has_a_row_per_scenario_under_a_header() {
        let report = Report { records: 10, outputs: 12, duplicated: 2, ..Report::default() };
        let text = table(&[Row { scenario: "kill".into(), faults: "8 x kill -9".into(), report }]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("| scenario"), "{text}");
        assert!(lines[2].contains("| 8 x kill -9 |") && lines[2].contains("| 12 "), "{text}");
    }
}
