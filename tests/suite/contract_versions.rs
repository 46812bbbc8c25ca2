//! Both versions of the guest contract run: components built with the SDK follow 0.2.0 (a
//! batch as columns and one byte buffer), and components built for 0.1.0 (a list of records) keep running,
//! with the same records, results, errors and cache calls.

use sluice::cache::CacheBackend;
use sluice::engine::Limits;
use sluice::record::{Header, InputRecord};
use sluice_tests::fixtures::{engine, engine_with, instance, load, record, records};

/// Records covering every field's edge: headers repeated and empty, a null key, a null value,
/// an empty value and a value that is not UTF-8.
fn edge_records() -> Vec<InputRecord> {
    let mut records = records(&["a", "b", "", "d"]);
    records[0].headers.push(Header { key: "source".into(), value: Vec::new() });
    records[1].key = None;
    records[2].headers.clear();
    records[3].value = None;
    records.push(InputRecord { value: Some(vec![0xff, 0x00, 0xfe]), ..record(4, "k4", "") });
    records
}

#[test]
fn sdk_components_follow_contract_0_2_and_old_ones_0_1() {
    let engine = engine();
    assert_eq!(load(&engine, "passthrough").contract(), "0.2.0");
    assert_eq!(load(&engine, "contract-v01").contract(), "0.1.0");
}

#[tokio::test]
async fn a_0_2_component_gets_every_field_of_every_record_back_unchanged() {
    let (mut passthrough, _) = instance(&engine(), "passthrough", &[]);
    let records = edge_records();
    let results = passthrough.process(&records).await.unwrap();
    assert_eq!(results.len(), records.len());
    for (record, result) in records.iter().zip(results) {
        let outputs = result.unwrap();
        assert_eq!(outputs.len(), 1);
        let output = &outputs[0];
        assert_eq!((&output.key, &output.value, &output.headers), (&record.key, &record.value, &record.headers));
        assert_eq!(output.target, None);
    }
}

#[tokio::test]
async fn a_0_2_component_sees_the_topic_partition_offset_and_timestamp_of_each_record() {
    let (mut hostile, _) = instance(&engine(), "hostile", &[]);
    let mut batch = vec![record(41, "a", "describe"), record(42, "b", "describe")];
    for record in &mut batch {
        record.topic = "orders".into();
        record.partition = 7;
    }
    batch[1].timestamp_ms = None;
    batch[1].headers.push(Header { key: "trace".into(), value: b"t1".to_vec() });
    let results = hostile.process(&batch).await.unwrap();
    let described: Vec<String> = results
        .into_iter()
        .map(|result| String::from_utf8(result.unwrap()[0].value.clone().unwrap()).unwrap())
        .collect();
    assert_eq!(
        described,
        [
            "orders/7@41 t=Some(1700000000041) key=a headers=source:test",
            "orders/7@42 t=None key=b headers=source:test,trace:t1"
        ]
    );
}

#[tokio::test]
async fn a_0_2_component_returns_errors_and_outputs_of_the_right_records() {
    // Room for the 20 MiB of outputs `huge` emits.
    let limits = Limits { max_output_bytes_per_batch: 32 << 20, ..Limits::default() };
    let (mut hostile, _) = instance(&engine_with(limits), "hostile", &[]);
    let results = hostile.process(&records(&["one", "fail", "retry", "four", "huge"])).await.unwrap();
    assert_eq!(results[0].as_ref().unwrap()[0].value.as_deref(), Some(&b"one"[..]));
    let error = results[1].as_ref().unwrap_err();
    assert_eq!((error.message.as_str(), error.retryable), ("rejected record at offset 1", false));
    let error = results[2].as_ref().unwrap_err();
    assert_eq!((error.message.as_str(), error.retryable), ("try again later", true));
    assert_eq!(results[3].as_ref().unwrap()[0].value.as_deref(), Some(&b"four"[..]));
    let huge = results[4].as_ref().unwrap();
    assert_eq!(huge.len(), 20, "twenty outputs of one record, in order");
    assert!(huge.iter().all(|o| o.value.as_ref().is_some_and(|v| v.len() == 1 << 20)));
}

#[tokio::test]
async fn a_0_1_component_keeps_running_with_its_cache_calls() {
    let (mut old, cache) = instance(&engine(), "contract-v01", &[]);
    let batch = edge_records();
    let results = old.process(&batch).await.unwrap();
    for (record, result) in batch.iter().zip(&results) {
        let output = &result.as_ref().unwrap()[0];
        let mut headers = record.headers.clone();
        headers.push(Header { key: "contract".into(), value: b"0.1.0".to_vec() });
        assert_eq!((&output.key, &output.value, &output.headers), (&record.key, &record.value, &headers));
    }
    let results = old.process(&records(&["fail"])).await.unwrap();
    let error = results[0].as_ref().unwrap_err();
    assert_eq!((error.message.as_str(), error.retryable), ("offset 0: asked to fail", false));
    let count = cache.get("test:v01:records").await.unwrap();
    assert_eq!(count.as_deref(), Some(&b"6"[..]), "five records and one failure, each counted once");
}
