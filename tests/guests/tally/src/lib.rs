//! Tally: a **test-only** guest for batch-atomic cache effects. Each record's value is a list of
//! words; each word adds 1 to the cache counter `wc:<word>` (one `cache::incr_many` per record,
//! no TTL), and the record emits `(word, count)` for each word, the count being what `incr`
//! returned.
//!
//! A record whose value starts with `panic ` counts its other words the same way and then
//! panics with `poison record at offset N after counting`: a call that traps after it has
//! written to the cache.

use sluice_sdk::{Output, Outputs, Record, Result, cache};

/// Counts the record's words, then traps if the record asks for it.
#[sluice_sdk::function]
fn process(record: &Record, out: &mut Outputs) -> Result<()> {
    let value = record.value_str()?;
    let (words, poison) = match value.strip_prefix("panic ") {
        Some(rest) => (rest, true),
        None => (value, false),
    };
    let words: Vec<&str> = words.split_whitespace().collect();
    let keys: Vec<String> = words.iter().map(|word| format!("wc:{word}")).collect();
    let entries: Vec<(&str, i64)> = keys.iter().map(|key| (key.as_str(), 1)).collect();
    let counts = cache::incr_many(&entries, None)?;
    if poison {
        panic!("poison record at offset {} after counting", record.offset());
    }
    for (word, count) in words.into_iter().zip(counts) {
        out.emit(Output::new().with_key(word).with_value(count.to_string()));
    }
    Ok(())
}
