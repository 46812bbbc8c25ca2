//! Latest state: keeps the most recent value of each entity in the cache, for other services
//! (or other functions) to read. Emits nothing.
//!
//! The value is a JSON object whose field named by config `id_field` (default `user_id`, a
//! string or a number) identifies the entity. The raw value is stored at
//! `<entity>:<id>:latest`, where `<entity>` is config `entity` (default `user`), with a TTL of
//! config `ttl_seconds` (default 86400) seconds. Within a partition records arrive in offset
//! order, so the last write wins; a replay writes the same bytes again (idempotent).

use sluice_sdk::{Outputs, Record, Result, cache, config};

/// Stores the record's value as its entity's latest state.
#[sluice_sdk::function]
fn process(record: &Record, _out: &mut Outputs) -> Result<()> {
    let (_, id) = record.value_json_field(&config::get_or("id_field", "user_id"))?;
    let entity = config::get_or("entity", "user");
    let ttl = config::seconds("ttl_seconds", 86400)?;

    let value = record.value().unwrap_or_default();
    cache::set(&format!("{entity}:{id}:latest"), value, Some(ttl))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use sluice_sdk::{Error, Record, testing};

    #[test]
    fn the_last_value_of_each_entity_wins_and_nothing_is_emitted() {
        let records = vec![
            Record::new().with_offset(0).with_value(r#"{"user_id":"u1","v":1}"#),
            Record::new().with_offset(1).with_value(r#"{"user_id":7,"v":2}"#),
            Record::new().with_offset(2).with_value(r#"{ "user_id": "u1", "v": 3 }"#),
        ];
        let results = testing::run(super::process, records);
        assert_eq!(results, vec![Ok(vec![]), Ok(vec![]), Ok(vec![])]);
        assert_eq!(
            testing::cache_entries(),
            [
                ("user:7:latest".to_string(), br#"{"user_id":7,"v":2}"#.to_vec()),
                ("user:u1:latest".to_string(), br#"{ "user_id": "u1", "v": 3 }"#.to_vec()),
            ],
            "the raw bytes are stored, not a re-serialization"
        );
    }

    #[test]
    fn entity_and_id_field_come_from_config() {
        testing::set_config("entity", "device");
        testing::set_config("id_field", "serial");
        testing::set_config("ttl_seconds", "60");
        let results = testing::run(super::process, vec![Record::new().with_value(r#"{"serial":"d-9"}"#)]);
        assert_eq!(results, vec![Ok(vec![])]);
        assert_eq!(testing::cache_entries(), [("device:d-9:latest".to_string(), br#"{"serial":"d-9"}"#.to_vec())]);
    }

    #[test]
    fn a_missing_or_invalid_id_is_fatal_and_names_field_and_offset() {
        let results = testing::run(
            super::process,
            vec![
                Record::new().with_offset(5).with_value(r#"{"id":"x"}"#),
                Record::new().with_offset(6).with_value(r#"{"user_id":null}"#),
                Record::new().with_offset(7).with_value("[]"),
                Record::new().with_offset(8),
            ],
        );
        assert_eq!(results[0], Err(Error::fatal(r#"record at offset 5: field "user_id" is missing"#)));
        assert_eq!(results[1], Err(Error::fatal(r#"record at offset 6: field "user_id" is not a string or a number"#)));
        assert_eq!(results[2], Err(Error::fatal("record at offset 7: value is not a JSON object")));
        assert_eq!(results[3], Err(Error::fatal("record at offset 8: value is missing")));
        assert!(testing::cache_entries().is_empty());
    }

    #[test]
    fn a_cache_outage_is_retryable() {
        testing::set_cache_unavailable(true);
        let results = testing::run(super::process, vec![Record::new().with_value(r#"{"user_id":"u1"}"#)]);
        assert!(results[0].as_ref().unwrap_err().is_retryable());
    }
}
