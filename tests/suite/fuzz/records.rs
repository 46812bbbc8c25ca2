//! Records: the local runner's input files, and records through a guest and back.
//!
//! Properties: no input file makes the runner's reader panic, and a refusal names the line;
//! records written as input lines read back equal, raw lines byte for byte; any record
//! (any bytes in its key, value and headers) goes through the passthrough guest and comes
//! back as the same output; the runner's JSON report of any output is one JSON object a line.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use sluice::record::{Header, InputRecord};
use sluice::runner::{self, RunOptions};
use sluice_tests::fixtures;
use sluice_tests::fuzzing::{check, mutated};

const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"\"key\":",
    b"\"value\":",
    b"\"headers\":",
    b"\"offset\":",
    b"\"partition\":",
    b"null",
    b"\n",
    b"\r\n",
    b"\xff",
    b"\"",
    b"\\u0000",
    b"{\"a\":[1,2]}",
    b"2147483648",
    b"-9223372036854775809",
];

/// An input record as a user writes it: text keys, values and headers.
#[derive(Debug, Clone)]
struct Line {
    topic: Option<String>,
    partition: Option<i32>,
    offset: Option<i64>,
    timestamp_ms: Option<i64>,
    key: Option<String>,
    value: Option<String>,
    headers: BTreeMap<String, String>,
}

fn line() -> impl Strategy<Value = Line> {
    (
        prop::option::of(any::<String>()),
        prop::option::of(any::<i32>()),
        prop::option::of(any::<i64>()),
        prop::option::of(any::<i64>()),
        prop::option::of(any::<String>()),
        prop::option::of(any::<String>()),
        prop::collection::btree_map(any::<String>(), any::<String>(), 0..4),
    )
        .prop_map(|(topic, partition, offset, timestamp_ms, key, value, headers)| Line {
            topic,
            partition,
            offset,
            timestamp_ms,
            key,
            value,
            headers,
        })
}

fn to_json(line: &Line) -> String {
    let mut object = serde_json::Map::new();
    let mut put = |name: &str, value: serde_json::Value| {
        object.insert(name.into(), value);
    };
    if let Some(topic) = &line.topic {
        put("topic", topic.clone().into());
    }
    if let Some(partition) = line.partition {
        put("partition", partition.into());
    }
    if let Some(offset) = line.offset {
        put("offset", offset.into());
    }
    if let Some(ms) = line.timestamp_ms {
        put("timestamp_ms", ms.into());
    }
    put("key", line.key.clone().into());
    put("value", line.value.clone().into());
    put("headers", serde_json::to_value(&line.headers).expect("JSON"));
    serde_json::Value::Object(object).to_string()
}

#[test]
fn records_written_as_input_lines_read_back_equal() {
    check("runner_input_round_trip", 256, prop::collection::vec(line(), 0..8), |lines| {
        let text: String = lines.iter().map(|l| to_json(l) + "\n").collect();
        let records = runner::read_records(text.as_bytes(), false)
            .map_err(|e| TestCaseError::fail(format!("{text} is refused: {e:#}")))?;
        prop_assert_eq!(records.len(), lines.len());
        for (index, (line, record)) in lines.iter().zip(&records).enumerate() {
            prop_assert_eq!(&record.topic, line.topic.as_deref().unwrap_or("local"));
            prop_assert_eq!(record.partition, line.partition.unwrap_or(0));
            prop_assert_eq!(record.offset, line.offset.unwrap_or(index as i64));
            prop_assert_eq!(record.timestamp_ms, line.timestamp_ms);
            prop_assert_eq!(&record.key, &line.key.clone().map(String::into_bytes));
            prop_assert_eq!(&record.value, &line.value.clone().map(String::into_bytes));
            let headers: Vec<Header> =
                line.headers.iter().map(|(k, v)| Header { key: k.clone(), value: v.clone().into_bytes() }).collect();
            prop_assert_eq!(&record.headers, &headers);
        }
        Ok(())
    });
}

#[test]
fn raw_input_lines_are_record_values_byte_for_byte() {
    let lines = prop::collection::vec("[^\n\r]*", 0..8);
    check("runner_raw_input", 256, lines, |lines| {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let records = runner::read_records(text.as_bytes(), true).map_err(|e| TestCaseError::fail(format!("{e:#}")))?;
        let kept: Vec<&String> = lines.iter().filter(|l| !l.trim().is_empty()).collect();
        prop_assert_eq!(records.len(), kept.len());
        for (index, (line, record)) in kept.iter().zip(&records).enumerate() {
            prop_assert_eq!(record.value.as_deref(), Some(line.as_bytes()));
            prop_assert_eq!(record.offset, index as i64);
        }
        Ok(())
    });
}

#[test]
fn any_input_file_is_read_or_refused_naming_its_line() {
    let files = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        prop::collection::vec(line(), 1..4).prop_flat_map(|lines| mutated(
            lines.iter().map(|l| to_json(l) + "\n").collect::<String>().into_bytes(),
            TOKENS
        )),
    ];
    check("runner_input_mutated", 512, files, |bytes| {
        for raw in [false, true] {
            if let Err(error) = runner::read_records(bytes.as_slice(), raw) {
                let message = format!("{error:#}");
                prop_assert!(message.contains("input line "), "{:?} does not name the line", message);
            }
        }
        Ok(())
    });
}

fn bytes() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop::option::of(prop::collection::vec(any::<u8>(), 0..200))
}

fn input_record() -> impl Strategy<Value = InputRecord> {
    (
        any::<String>(),
        any::<i32>(),
        any::<i64>(),
        prop::option::of(any::<i64>()),
        bytes(),
        bytes(),
        prop::collection::vec((any::<String>(), prop::collection::vec(any::<u8>(), 0..40)), 0..4),
    )
        .prop_map(|(topic, partition, offset, timestamp_ms, key, value, headers)| InputRecord {
            topic,
            partition,
            offset,
            timestamp_ms,
            key,
            value,
            headers: headers.into_iter().map(|(key, value)| Header { key, value }).collect(),
        })
}

#[test]
fn any_record_goes_through_the_passthrough_guest_unchanged() {
    let engine = fixtures::engine();
    let (instance, _cache) = fixtures::instance(&engine, "passthrough", &[]);
    let instance = std::cell::RefCell::new(instance);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    check("guest_record_round_trip", 32, prop::collection::vec(input_record(), 1..16), |batch| {
        let results =
            runtime.block_on(instance.borrow_mut().process(&batch)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(results.len(), batch.len());
        for (record, result) in batch.iter().zip(results) {
            let outputs = result.map_err(|e| TestCaseError::fail(e.message))?;
            prop_assert_eq!(outputs.len(), 1);
            let output = &outputs[0];
            prop_assert_eq!(&output.key, &record.key);
            prop_assert_eq!(&output.value, &record.value);
            prop_assert_eq!(&output.headers, &record.headers);
            prop_assert_eq!(&output.target, &None);
        }
        Ok(())
    });
}

#[test]
fn the_runner_reports_any_output_as_one_json_object_a_line() {
    let engine = fixtures::engine();
    let module = fixtures::load(&engine, "passthrough");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let options = RunOptions { json: true, batch_size: 4, ..RunOptions::default() };
    check("runner_json_report", 16, prop::collection::vec(input_record(), 1..8), |records| {
        let mut out = Vec::new();
        let summary = runtime
            .block_on(runner::run(&engine, &module, &records, &options, &mut out))
            .map_err(|e| TestCaseError::fail(format!("{e:#}")))?;
        prop_assert_eq!(summary.outputs, records.len());
        let text = String::from_utf8(out).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()
            .map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(lines.len(), records.len());
        for (line, record) in lines.iter().zip(&records) {
            prop_assert_eq!(&line["offset"], &serde_json::json!(record.offset));
            let shown = |b: &Option<Vec<u8>>| match b {
                None => serde_json::Value::Null,
                Some(b) => match std::str::from_utf8(b) {
                    Ok(s) => s.into(),
                    Err(_) => format!("hex:{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>()).into(),
                },
            };
            prop_assert_eq!(&line["outputs"][0]["key"], &shown(&record.key));
            prop_assert_eq!(&line["outputs"][0]["value"], &shown(&record.value));
        }
        Ok(())
    });
}
