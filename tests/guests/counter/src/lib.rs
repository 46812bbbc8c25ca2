//! Counter: a stateful function for the chaos suite. For each record it adds one to the
//! cache entry `count:<key>` (`cache::incr`, no TTL) and emits the record with the new count
//! appended to its JSON object value: `{"id":7,"seq":3}` becomes `{"id":7,"seq":3,"count":4}`.
//!
//! The count makes the cache's side of at-least-once delivery visible: when every record is
//! counted exactly once, a key's counts are 1, 2, 3, ... in input order. An increment that the
//! server applied but whose reply never arrived (a frozen server, a timed-out call) is applied
//! again when the record is retried, and the key's counts then run ahead of its records.
//!
//! A record without a key or whose value is not a JSON object is rejected (not retryable).

use sluice_sdk::{Error, Output, Outputs, Record, Result, cache};

/// Counts the record under its key and emits it with the count.
#[sluice_sdk::function]
fn process(record: &Record, out: &mut Outputs) -> Result<()> {
    let key = record.key_str()?;
    let value = record.value_str()?.trim_end();
    let Some(fields) = value.strip_suffix('}') else {
        return Err(Error::fatal(format!("record at offset {}: value is not a JSON object", record.offset())));
    };
    let count = cache::incr(&format!("count:{key}"), 1, None)?;
    let separator = if fields.trim_end().ends_with('{') { "" } else { "," };
    out.emit(Output::from_record(record).with_value(format!("{fields}{separator}\"count\":{count}}}")));
    Ok(())
}
