//! Word count: counts every word of every record in the cache and emits the running count of
//! each word occurrence.
//!
//! The value must be UTF-8 text; a null value produces nothing. Words are the
//! whitespace-separated parts of the text with ASCII punctuation trimmed from both ends,
//! lowercased; empty ones are skipped. All of a record's words are counted with one
//! `cache::incr_many` call (keys `wc:<word>`, no TTL), then each occurrence is emitted in order
//! with key = the word and value = its count after that occurrence, as decimal text. A word
//! whose count reaches 1,000, 10,000, 100,000 and so on is logged at `info` (what `sluice logs`
//! and the console show).
//!
//! Delivery is at-least-once, so a replayed record counts its words again: fine for a
//! demonstration, not for billing.

use std::ops::Range;

use sluice_sdk::cache::{self, MAX_BATCH_ENTRIES};
use sluice_sdk::{Output, Outputs, Record, Result, log};

/// The smallest count that is logged: from there, each power of ten.
const FIRST_LOGGED_COUNT: i64 = 1_000;

/// The prefix of every counter's key.
pub const KEY_PREFIX: &str = "wc:";

/// The cache keys of the words of `text`, one after another in one string, and where each
/// key is in it. A word is lowercased and stripped of surrounding ASCII punctuation; its key is
/// [`KEY_PREFIX`] followed by the word. One string for all the keys, rather than one per word,
/// keeps the function off the allocator (`docs/benchmarks.md` measures the difference). Public
/// for the engine bench, whose native word count calls it.
pub fn keys(text: &str) -> (String, Vec<Range<usize>>) {
    let mut keys = String::with_capacity(text.len() * 2);
    let mut ranges = Vec::new();
    for word in text.split_whitespace() {
        let word = word.trim_matches(|c: char| c.is_ascii_punctuation());
        if word.is_empty() {
            continue;
        }
        let start = keys.len();
        keys.push_str(KEY_PREFIX);
        if word.is_ascii() {
            keys.push_str(word);
            keys[start..].make_ascii_lowercase();
        } else {
            keys.push_str(&word.to_lowercase());
        }
        ranges.push(start..keys.len());
    }
    (keys, ranges)
}

/// Whether reaching `count` is worth a log line: 1,000, 10,000, 100,000, ...
fn is_milestone(count: i64) -> bool {
    let mut milestone = FIRST_LOGGED_COUNT;
    while milestone < count {
        milestone = milestone.saturating_mul(10);
    }
    milestone == count
}

/// Counts the record's words and emits `(word, count)` per occurrence.
#[sluice_sdk::function]
fn process(record: &Record, out: &mut Outputs) -> Result<()> {
    if record.value().is_none() {
        return Ok(());
    }
    let (keys, ranges) = keys(record.value_str()?);
    // One round trip per record; a record of more words than one call takes is split.
    for ranges in ranges.chunks(MAX_BATCH_ENTRIES) {
        let entries: Vec<(&str, i64)> = ranges.iter().map(|range| (&keys[range.clone()], 1)).collect();
        let counts = cache::incr_many(&entries, None)?;
        let mut text = itoa::Buffer::new();
        for (range, count) in ranges.iter().zip(counts) {
            let word = &keys[range.start + KEY_PREFIX.len()..range.end];
            if is_milestone(count) {
                log::info(format!("the word {word:?} has been counted {count} times"));
            }
            // Both are borrowed and short, so the output holds them without allocating.
            out.emit(Output::new().with_key(word).with_value(text.format(count)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use sluice_sdk::log::Level;
    use sluice_sdk::{Error, Output, Record, testing};

    fn pairs(outputs: &[Output]) -> Vec<(&str, &str)> {
        outputs.iter().map(|o| (o.key_str().unwrap(), o.value_str().unwrap())).collect()
    }

    #[test]
    fn counts_every_occurrence_across_records() {
        let records = vec![
            Record::new().with_offset(0).with_value("the cat"),
            Record::new().with_offset(1).with_value("The dog the"),
        ];
        let results = testing::run(super::process, records);
        assert_eq!(pairs(results[0].as_ref().unwrap()), [("the", "1"), ("cat", "1")]);
        assert_eq!(pairs(results[1].as_ref().unwrap()), [("the", "2"), ("dog", "1"), ("the", "3")]);
        assert!(results.iter().flatten().flatten().all(|o| o.target().is_none() && o.headers().is_empty()));
        assert_eq!(
            testing::cache_entries(),
            [("wc:cat".to_string(), b"1".to_vec()), ("wc:dog".into(), b"1".to_vec()), ("wc:the".into(), b"3".to_vec())]
        );
    }

    #[test]
    fn a_word_reaching_each_power_of_ten_from_a_thousand_is_logged_once() {
        let records: Vec<Record> = (0..10_000).map(|i| Record::new().with_offset(i).with_value("tick")).collect();
        testing::run(super::process, records);
        assert_eq!(
            testing::logs(),
            [
                (Level::Info, r#"the word "tick" has been counted 1000 times"#.to_string()),
                (Level::Info, r#"the word "tick" has been counted 10000 times"#.to_string()),
            ]
        );
        assert!(!super::is_milestone(100) && !super::is_milestone(1_001) && super::is_milestone(100_000));
    }

    #[test]
    fn punctuation_is_trimmed_and_case_folded() {
        let results =
            testing::run(super::process, vec![Record::new().with_value("  Hello, WORLD!  \"hello\" -- it's\t...\n")]);
        assert_eq!(
            pairs(results[0].as_ref().unwrap()),
            [("hello", "1"), ("world", "1"), ("hello", "2"), ("it's", "1")]
        );
    }

    #[test]
    fn a_null_value_or_no_words_gives_no_outputs() {
        let results = testing::run(super::process, vec![Record::new().with_key("k"), Record::new().with_value(" ?! ")]);
        assert_eq!(results, vec![Ok(vec![]), Ok(vec![])]);
        assert!(testing::cache_entries().is_empty());
    }

    #[test]
    fn a_value_that_is_not_utf8_is_a_fatal_error() {
        let results = testing::run(super::process, vec![Record::new().with_offset(17).with_value(vec![0x66, 0xff])]);
        assert_eq!(results, vec![Err(Error::fatal("record at offset 17: value is not UTF-8 text"))]);
    }

    #[test]
    fn a_cache_outage_is_retryable() {
        testing::set_cache_unavailable(true);
        let results = testing::run(super::process, vec![Record::new().with_value("word")]);
        assert!(results[0].as_ref().unwrap_err().is_retryable());
    }
}
