//! Dedup: passes each id through once and drops later records with the same id.
//!
//! The value is a JSON object whose field named by config `id_field` (default `id`, a string
//! or a number) identifies it. `cache::incr("seen:<id>", 1)` with a TTL of config
//! `ttl_seconds` (default 3600) seconds counts the sightings: the first one (count 1) is
//! emitted unchanged, later ones within the TTL are dropped with a debug log line.
//!
//! Delivery is at-least-once: if the runtime replays a record after its first sighting was
//! counted but before its output was committed, the replay is dropped as a duplicate. Dedup
//! trades that small window for far fewer duplicates downstream.

use sluice_sdk::{Output, Outputs, Record, Result, cache, config, log};

/// Emits the record the first time its id is seen.
#[sluice_sdk::function]
fn process(record: &Record, out: &mut Outputs) -> Result<()> {
    let (_, id) = record.value_json_field(&config::get_or("id_field", "id"))?;
    let ttl = config::seconds("ttl_seconds", 3600)?;

    let seen = cache::incr(&format!("seen:{id}"), 1, Some(ttl))?;
    if seen == 1 {
        out.emit(Output::from_record(record));
    } else {
        log::debug(format!("dropped duplicate id {id:?} at offset {} (seen {seen} times)", record.offset()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use sluice_sdk::log::Level;
    use sluice_sdk::{Error, Output, Record, testing};

    #[test]
    fn only_the_first_record_of_each_id_passes() {
        let records = vec![
            Record::new().with_offset(0).with_key("a").with_value(r#"{"id":"x","n":1}"#).with_header("h", "1"),
            Record::new().with_offset(1).with_key("b").with_value(r#"{"id":"x","n":2}"#),
            Record::new().with_offset(2).with_key("c").with_value(r#"{"id":5}"#),
            Record::new().with_offset(3).with_key("d").with_value(r#"{"id":"5"}"#),
        ];
        let results = testing::run(super::process, records);
        assert_eq!(
            results,
            vec![
                Ok(vec![Output::new().with_key("a").with_value(r#"{"id":"x","n":1}"#).with_header("h", "1")]),
                Ok(vec![]),
                Ok(vec![Output::new().with_key("c").with_value(r#"{"id":5}"#)]),
                Ok(vec![]),
            ]
        );
        assert_eq!(
            testing::logs(),
            [
                (Level::Debug, r#"dropped duplicate id "x" at offset 1 (seen 2 times)"#.to_string()),
                (Level::Debug, r#"dropped duplicate id "5" at offset 3 (seen 2 times)"#.to_string()),
            ]
        );
        assert_eq!(testing::cache_entries(), [("seen:5".to_string(), b"2".to_vec()), ("seen:x".into(), b"2".to_vec())]);
    }

    #[test]
    fn the_id_field_comes_from_config() {
        testing::set_config("id_field", "order");
        let results = testing::run(
            super::process,
            vec![Record::new().with_value(r#"{"order":"o1"}"#), Record::new().with_value(r#"{"order":"o1"}"#)],
        );
        assert_eq!(results[0].as_ref().unwrap().len(), 1);
        assert_eq!(results[1].as_ref().unwrap().len(), 0);
    }

    #[test]
    fn a_missing_id_is_fatal() {
        let results = testing::run(super::process, vec![Record::new().with_offset(9).with_value(r#"{"name":"x"}"#)]);
        assert_eq!(results, vec![Err(Error::fatal(r#"record at offset 9: field "id" is missing"#))]);
    }

    #[test]
    fn a_cache_outage_is_retryable() {
        testing::set_cache_unavailable(true);
        let results = testing::run(super::process, vec![Record::new().with_value(r#"{"id":1}"#)]);
        assert!(results[0].as_ref().unwrap_err().is_retryable());
    }
}
