//! Enrich: adds a reference profile to each JSON record, looked up cache-aside.
//!
//! The value is a JSON object whose field named by config `lookup_field` (default `user_id`,
//! a string or a number) identifies the profile. The profile is read from the cache at
//! `ref:<id>`; on a miss it comes from the slow reference source (here config `ref.<id>`,
//! JSON text) and is cached for config `ttl_seconds` (default 300) seconds. The one output has
//! the record's key and the input object plus `"profile"` (the profile, or `null` when there
//! is none) and `"profile_source"` (`"cache"`, `"source"` or `"none"`). A missing profile is
//! not cached, so it is looked up again next time.

use serde_json::Value;
use sluice_sdk::{Error, Output, Outputs, Record, Result, cache, config};

/// Reads a JSON object's id field as text: a string as is, a number as its decimal text.
fn lookup(id: &str) -> Result<(Value, &'static str)> {
    let cache_key = format!("ref:{id}");
    if let Some(bytes) = cache::get(&cache_key)? {
        let profile = serde_json::from_slice(&bytes)
            .map_err(|e| Error::fatal(format!("cached profile at {cache_key} is not JSON: {e}")))?;
        return Ok((profile, "cache"));
    }
    let source_key = format!("ref.{id}");
    let Some(text) = config::get(&source_key) else {
        return Ok((Value::Null, "none"));
    };
    let profile: Value =
        serde_json::from_str(&text).map_err(|e| Error::fatal(format!("reference {source_key} is not JSON: {e}")))?;
    let ttl = config::seconds("ttl_seconds", 300)?;
    cache::set(&cache_key, &serde_json::to_vec(&profile)?, Some(ttl))?;
    Ok((profile, "source"))
}

/// Adds `profile` and `profile_source` to the record's JSON object.
#[sluice_sdk::function]
fn process(record: &Record, out: &mut Outputs) -> Result<()> {
    let (mut object, id) = record.value_json_field(&config::get_or("lookup_field", "user_id"))?;
    let (profile, source) = lookup(&id)?;
    object.insert("profile".to_owned(), profile);
    object.insert("profile_source".to_owned(), Value::from(source));

    let mut output = Output::new().with_value(serde_json::to_vec(&object)?);
    if let Some(key) = record.key() {
        output = output.with_key(key);
    }
    out.emit(output);
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use sluice_sdk::{Error, Record, testing};

    fn run_one(record: Record) -> sluice_sdk::Result<Vec<sluice_sdk::Output>> {
        testing::run(super::process, vec![record]).remove(0)
    }

    #[test]
    fn miss_then_hit_then_none() {
        testing::set_config("ref.u1", r#"{"name": "Ada", "tier": "gold"}"#);
        let record = Record::new().with_offset(3).with_key("k1").with_value(r#"{"user_id":"u1","amount":5}"#);

        let first = run_one(record.clone()).unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].key(), Some(&b"k1"[..]));
        assert_eq!(
            first[0].value_str(),
            Some(r#"{"amount":5,"profile":{"name":"Ada","tier":"gold"},"profile_source":"source","user_id":"u1"}"#)
        );
        assert_eq!(testing::cache_entries(), [("ref:u1".to_string(), br#"{"name":"Ada","tier":"gold"}"#.to_vec())]);

        let second = run_one(record).unwrap();
        assert_eq!(
            second[0].value_str(),
            Some(r#"{"amount":5,"profile":{"name":"Ada","tier":"gold"},"profile_source":"cache","user_id":"u1"}"#)
        );

        let unknown = run_one(Record::new().with_value(r#"{"user_id":"u2"}"#)).unwrap();
        assert_eq!(unknown[0].key(), None);
        assert_eq!(unknown[0].value_str(), Some(r#"{"profile":null,"profile_source":"none","user_id":"u2"}"#));
        assert_eq!(testing::cache_entries().len(), 1, "a missing profile is not cached");
    }

    #[test]
    fn numeric_ids_and_a_configured_field() {
        testing::set_config("lookup_field", "customer");
        testing::set_config("ref.42", "[1,2]");
        testing::cache_put("ref:7", r#""seven""#);
        let results = testing::run(
            super::process,
            vec![
                Record::new().with_json_value(&json!({"customer": 42})),
                Record::new().with_json_value(&json!({"customer": 7})),
            ],
        );
        assert_eq!(
            results[0].as_ref().unwrap()[0].value_str(),
            Some(r#"{"customer":42,"profile":[1,2],"profile_source":"source"}"#)
        );
        assert_eq!(
            results[1].as_ref().unwrap()[0].value_str(),
            Some(r#"{"customer":7,"profile":"seven","profile_source":"cache"}"#)
        );
    }

    #[test]
    fn bad_input_is_fatal_and_names_the_problem() {
        let results = testing::run(
            super::process,
            vec![
                Record::new().with_offset(1).with_value("not json"),
                Record::new().with_offset(2).with_value("[1]"),
                Record::new().with_offset(3).with_value(r#"{"other":1}"#),
                Record::new().with_offset(4).with_value(r#"{"user_id":true}"#),
            ],
        );
        let messages: Vec<String> = results.iter().map(|r| r.as_ref().unwrap_err().message().to_owned()).collect();
        assert!(messages[0].starts_with("record at offset 1: value is not valid JSON"), "{}", messages[0]);
        assert_eq!(messages[1], "record at offset 2: value is not a JSON object");
        assert_eq!(messages[2], r#"record at offset 3: field "user_id" is missing"#);
        assert_eq!(messages[3], r#"record at offset 4: field "user_id" is not a string or a number"#);
        assert!(results.iter().all(|r| !r.as_ref().unwrap_err().is_retryable()));
    }

    #[test]
    fn a_cache_outage_is_retryable() {
        testing::set_cache_unavailable(true);
        let result = run_one(Record::new().with_value(r#"{"user_id":"u1"}"#));
        assert!(result.unwrap_err().is_retryable());
    }

    #[test]
    fn a_bad_ttl_setting_is_fatal() {
        testing::set_config("ref.u1", "{}");
        testing::set_config("ttl_seconds", "soon");
        let result = run_one(Record::new().with_value(r#"{"user_id":"u1"}"#));
        assert_eq!(result, Err(Error::fatal(r#"config ttl_seconds = "soon" is not a whole number of seconds"#)));
    }
}
