//! The batch shape of contract 0.2.0 (`wit/sluice.wit`): its host bindings, and the two
//! conversions between the runtime's records and it. [`pack`] copies a batch's bytes into one
//! buffer with spans into it; [`unpack`] checks the positions a guest's results give and
//! builds one [`RecordResult`] per input record.

use crate::{Header, InputRecord, OutputRecord, RecordError, RecordResult};

/// Host bindings generated from `wit/sluice.wit` (contract 0.2.0).
#[allow(missing_docs)]
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "processor",
        imports: { default: async },
        exports: { default: async },
        additional_derives: [PartialEq, Eq],
    });
}

use bindings::sluice::function::types as wire;

/// The length that stands for a null key or value.
const NULL: i32 = -1;
/// The timestamp that stands for none (Kafka's own convention).
const NO_TIMESTAMP: i64 = -1;

/// Packs `records`, which are consecutive records of one topic partition, into one batch of
/// columns with every record's bytes back to back. The topic and partition are the first
/// record's.
pub fn pack(records: &[InputRecord]) -> wire::InputBatch {
    let bytes: usize = records.iter().map(input_bytes).sum();
    let headers: usize = records.iter().map(|r| r.headers.len()).sum();
    let mut batch = wire::InputBatch {
        topic: records.first().map(|r| r.topic.clone()).unwrap_or_default(),
        partition: records.first().map_or(0, |r| r.partition),
        offsets: Vec::with_capacity(records.len()),
        timestamps: Vec::with_capacity(records.len()),
        key_lengths: Vec::with_capacity(records.len()),
        value_lengths: Vec::with_capacity(records.len()),
        header_counts: Vec::with_capacity(records.len()),
        header_lengths: Vec::with_capacity(2 * headers),
        data: Vec::with_capacity(bytes),
    };
    for record in records {
        debug_assert!(record.topic == batch.topic && record.partition == batch.partition, "one partition per batch");
        batch.offsets.push(record.offset);
        batch.timestamps.push(record.timestamp_ms.unwrap_or(NO_TIMESTAMP));
        batch.key_lengths.push(append(&mut batch.data, record.key.as_deref()));
        batch.value_lengths.push(append(&mut batch.data, record.value.as_deref()));
        batch.header_counts.push(record.headers.len() as u32);
        for header in &record.headers {
            batch.header_lengths.extend([header.key.len() as u32, header.value.len() as u32]);
            batch.data.extend_from_slice(header.key.as_bytes());
            batch.data.extend_from_slice(&header.value);
        }
    }
    batch
}

fn input_bytes(record: &InputRecord) -> usize {
    let len = |b: &Option<Vec<u8>>| b.as_ref().map_or(0, Vec::len);
    len(&record.key) + len(&record.value) + record.headers.iter().map(|h| h.key.len() + h.value.len()).sum::<usize>()
}

/// Appends `bytes` to `data` and returns their length, or [`NULL`] for none.
fn append(data: &mut Vec<u8>, bytes: Option<&[u8]>) -> i32 {
    match bytes {
        Some(bytes) => {
            data.extend_from_slice(bytes);
            bytes.len() as i32
        }
        None => NULL,
    }
}

/// Why the results of a call break the contract; the message names the entry at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MalformedResults(String);

/// Turns what a call on a batch of `batch_len` records returned into one result per record,
/// checking that every position is in the batch and in order, and that no record has both
/// outputs and an error.
pub fn unpack(batch_len: usize, results: wire::BatchResults) -> Result<Vec<RecordResult>, MalformedResults> {
    let malformed = |what: String| Err(MalformedResults(what));
    let mut unpacked: Vec<RecordResult> = (0..batch_len).map(|_| Ok(Vec::new())).collect();
    let mut last_input = 0;
    for (n, output) in results.outputs.into_iter().enumerate() {
        let input = output.input as usize;
        if input >= batch_len {
            return malformed(format!("output {n} is for input {input}, outside the batch of {batch_len}"));
        }
        if input < last_input {
            return malformed(format!("output {n} is for input {input}, after an output for input {last_input}"));
        }
        last_input = input;
        let headers = output.headers.into_iter().map(|h| Header { key: h.key, value: h.value }).collect();
        if let Ok(outputs) = &mut unpacked[input] {
            outputs.push(OutputRecord { key: output.key, value: output.value, headers, target: output.target });
        }
    }
    let mut next_input = 0;
    for (n, error) in results.errors.into_iter().enumerate() {
        let input = error.input as usize;
        if input >= batch_len || input < next_input {
            return malformed(format!(
                "error {n} is for input {input}: errors must be for inputs of the batch of {batch_len}, one at most per \
                 input, in order"
            ));
        }
        next_input = input + 1;
        if unpacked[input].as_ref().is_ok_and(|outputs| !outputs.is_empty()) {
            return malformed(format!("input {input} has both outputs and an error"));
        }
        unpacked[input] = Err(RecordError { message: error.message, retryable: error.retryable });
    }
    Ok(unpacked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(offset: i64, key: Option<&str>, value: Option<&str>, headers: &[(&str, &str)]) -> InputRecord {
        InputRecord {
            topic: "t".into(),
            partition: 3,
            offset,
            timestamp_ms: Some(offset * 10),
            key: key.map(|k| k.as_bytes().to_vec()),
            value: value.map(|v| v.as_bytes().to_vec()),
            headers: headers.iter().map(|(k, v)| Header { key: (*k).into(), value: v.as_bytes().to_vec() }).collect(),
        }
    }

    #[test]
    fn a_packed_batch_gives_topic_and_partition_once_and_every_field_as_a_column() {
        let records = [
            record(7, Some("k1"), Some("v1"), &[("h", "1"), ("h", "22")]),
            record(8, None, None, &[]),
            record(9, Some(""), Some("v3"), &[("x", "")]),
        ];
        let batch = pack(&records);
        assert_eq!((batch.topic.as_str(), batch.partition), ("t", 3));
        assert_eq!(batch.offsets, [7, 8, 9]);
        assert_eq!(batch.timestamps, [70, 80, 90]);
        assert_eq!(batch.key_lengths, [2, -1, 0], "a null key is -1, an empty one 0");
        assert_eq!(batch.value_lengths, [2, -1, 2]);
        assert_eq!(batch.header_counts, [2, 0, 1]);
        assert_eq!(batch.header_lengths, [1, 1, 1, 2, 1, 0]);
        assert_eq!(batch.data, b"k1v1h1h22v3x");
        let untimed = pack(&[InputRecord { timestamp_ms: None, ..records[1].clone() }]);
        assert_eq!(untimed.timestamps, [-1], "no timestamp is Kafka's -1");
    }

    /// Results with outputs for inputs 0 and 2 (two for 2) and an error for input 1.
    fn results() -> wire::BatchResults {
        let output = |input, value: &str| wire::OutputRecord {
            input,
            key: None,
            value: Some(value.as_bytes().to_vec()),
            headers: Vec::new(),
            target: None,
        };
        let first = wire::OutputRecord {
            key: Some(b"k0".to_vec()),
            headers: vec![wire::Header { key: "h".into(), value: Vec::new() }],
            ..output(0, "v0")
        };
        wire::BatchResults {
            outputs: vec![first, output(2, "v2"), wire::OutputRecord { target: Some("side".into()), ..output(2, "a") }],
            errors: vec![wire::RecordError { input: 1, message: "bad".into(), retryable: true }],
        }
    }

    #[test]
    fn results_unpack_to_one_result_per_input_in_order() {
        let unpacked = unpack(4, results()).unwrap();
        let output = |key: Option<&str>, value: &str, headers: Vec<Header>, target: Option<&str>| OutputRecord {
            key: key.map(|k| k.as_bytes().to_vec()),
            value: Some(value.as_bytes().to_vec()),
            headers,
            target: target.map(str::to_owned),
        };
        assert_eq!(
            unpacked,
            vec![
                Ok(vec![output(Some("k0"), "v0", vec![Header { key: "h".into(), value: vec![] }], None)]),
                Err(RecordError { message: "bad".into(), retryable: true }),
                Ok(vec![output(None, "v2", vec![], None), output(None, "a", vec![], Some("side"))]),
                Ok(vec![]),
            ]
        );
    }

    fn unpack_error(change: impl FnOnce(&mut wire::BatchResults)) -> String {
        let mut results = results();
        change(&mut results);
        unpack(4, results).unwrap_err().to_string()
    }

    #[test]
    fn results_that_break_the_contract_are_refused_with_the_entry_at_fault() {
        assert_eq!(unpack_error(|r| r.outputs[1].input = 4), "output 1 is for input 4, outside the batch of 4");
        assert_eq!(unpack_error(|r| r.outputs[2].input = 1), "output 2 is for input 1, after an output for input 2");
        assert_eq!(unpack_error(|r| r.errors[0].input = 2), "input 2 has both outputs and an error");
        let order =
            "error 1 is for input 1: errors must be for inputs of the batch of 4, one at most per input, in order";
        assert_eq!(unpack_error(|r| r.errors.push(r.errors[0].clone())), order);
        let outside =
            "error 0 is for input 9: errors must be for inputs of the batch of 4, one at most per input, in order";
        assert_eq!(unpack_error(|r| r.errors[0].input = 9), outside);
    }
}
