//! The batch shape of contract 0.2.0 (`wit/sluice.wit`): its host bindings, and the two
//! conversions between the runtime's records and it. [`pack`] copies a batch's bytes into one
//! buffer and columns of lengths; [`unpack`] checks the columns a guest returns and builds
//! one [`RecordResult`] per input record from them.

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
use sluice_contract::layout::{self, NO_TIMESTAMP, NULL};

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
        batch.key_lengths.push(layout::append(&mut batch.data, record.key.as_deref()));
        batch.value_lengths.push(layout::append(&mut batch.data, record.value.as_deref()));
        batch.header_counts.push(record.headers.len() as u32);
        for header in &record.headers {
            layout::append_header(&mut batch.data, &mut batch.header_lengths, header.key.as_bytes(), &header.value);
        }
    }
    batch
}

fn input_bytes(record: &InputRecord) -> usize {
    let len = |b: &Option<Vec<u8>>| b.as_ref().map_or(0, Vec::len);
    len(&record.key) + len(&record.value) + record.headers.iter().map(|h| h.key.len() + h.value.len()).sum::<usize>()
}

/// Why the results of a call break the contract; the message names the entry at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MalformedResults(String);

fn malformed<T>(what: impl Into<String>) -> Result<T, MalformedResults> {
    Err(MalformedResults(what.into()))
}

/// Turns what a call on a batch of `batch_len` records returned into one result per record,
/// checking that the output columns agree, that every length stays inside `data` and every
/// position inside the batch and in order, and that no record has both outputs and an error.
pub fn unpack(batch_len: usize, results: wire::BatchResults) -> Result<Vec<RecordResult>, MalformedResults> {
    let wire::BatchResults {
        inputs,
        key_lengths,
        value_lengths,
        header_counts,
        header_lengths,
        targets,
        target_names,
        data,
        errors,
    } = results;
    let count = inputs.len();
    let columns = [key_lengths.len(), value_lengths.len(), header_counts.len(), targets.len()];
    if columns != [count; 4] {
        return malformed(format!(
            "the output columns differ in length: {count} inputs, {} key-lengths, {} value-lengths, {} header-counts, \
             {} targets",
            columns[0], columns[1], columns[2], columns[3]
        ));
    }
    let mut bytes = Bytes { data: &data, used: 0 };
    let mut header_lengths = header_lengths.iter().copied();
    let mut unpacked: Vec<RecordResult> = (0..batch_len).map(|_| Ok(Vec::new())).collect();
    let mut last_input = 0;
    for n in 0..count {
        let input = inputs[n] as usize;
        if input >= batch_len {
            return malformed(format!("output {n} is for input {input}, outside the batch of {batch_len}"));
        }
        if input < last_input {
            return malformed(format!("output {n} is for input {input}, after an output for input {last_input}"));
        }
        last_input = input;
        let key = bytes.nullable(key_lengths[n], n, "key")?;
        let value = bytes.nullable(value_lengths[n], n, "value")?;
        let mut headers = Vec::with_capacity(header_counts[n] as usize);
        for _ in 0..header_counts[n] {
            let (Some(name), Some(value)) = (header_lengths.next(), header_lengths.next()) else {
                return malformed(format!("output {n}: header-lengths ends before its headers do"));
            };
            let Ok(key) = String::from_utf8(bytes.take(name as usize, n, "header name")?) else {
                return malformed(format!("output {n}: a header name is not UTF-8"));
            };
            headers.push(Header { key, value: bytes.take(value as usize, n, "header value")? });
        }
        let target = match targets[n] {
            NULL => None,
            t => match usize::try_from(t).ok().and_then(|t| target_names.get(t)) {
                Some(name) => Some(name.clone()),
                None => {
                    return malformed(format!("output {n}: target {t} is not one of the {} names", target_names.len()));
                }
            },
        };
        if let Ok(outputs) = &mut unpacked[input] {
            if outputs.is_empty() {
                // The record's outputs are the run of this input: room for all of them at once.
                outputs.reserve_exact(inputs[n..].iter().take_while(|&&i| i as usize == input).count());
            }
            outputs.push(OutputRecord { key, value, headers, target });
        }
    }
    if header_lengths.next().is_some() {
        return malformed("header-lengths has entries for headers no output has");
    }
    if bytes.used != data.len() {
        return malformed(format!("{} bytes of data belong to no output", data.len() - bytes.used));
    }
    let mut next_input = 0;
    for (n, error) in errors.into_iter().enumerate() {
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

/// The results' bytes, taken part after part.
struct Bytes<'a> {
    data: &'a [u8],
    used: usize,
}

impl Bytes<'_> {
    /// The next `len` bytes, for part `what` of output `n`.
    fn take(&mut self, len: usize, n: usize, what: &str) -> Result<Vec<u8>, MalformedResults> {
        match self.data.get(self.used..).and_then(|rest| rest.get(..len)) {
            Some(part) => {
                self.used += len;
                Ok(part.to_vec())
            }
            None => malformed(format!(
                "output {n}: its {what} of {len} bytes goes past the end of the {} data bytes",
                self.data.len()
            )),
        }
    }

    /// Like [`Bytes::take`] for a key or value: `None` for the length [`NULL`].
    fn nullable(&mut self, len: i32, n: usize, what: &str) -> Result<Option<Vec<u8>>, MalformedResults> {
        match len {
            NULL => Ok(None),
            len => match usize::try_from(len) {
                Ok(len) => self.take(len, n, what).map(Some),
                Err(_) => malformed(format!("output {n}: its {what} length is {len}")),
            },
        }
    }
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

    /// Results with outputs for inputs 0 and 2 (two for 2) and an error for input 1: output 0
    /// has key `k0`, value `v0` and header `h` (empty); outputs 1 and 2 have no key and values
    /// `v2` and `a`, the last for the output `side`.
    fn results() -> wire::BatchResults {
        wire::BatchResults {
            inputs: vec![0, 2, 2],
            key_lengths: vec![2, -1, -1],
            value_lengths: vec![2, 2, 1],
            header_counts: vec![1, 0, 0],
            header_lengths: vec![1, 0],
            targets: vec![-1, -1, 0],
            target_names: vec!["side".into()],
            data: b"k0v0hv2a".to_vec(),
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
        assert_eq!(unpack_error(|r| r.inputs[1] = 4), "output 1 is for input 4, outside the batch of 4");
        assert_eq!(unpack_error(|r| r.inputs[2] = 1), "output 2 is for input 1, after an output for input 2");
        assert_eq!(
            unpack_error(|r| r.targets.truncate(2)),
            "the output columns differ in length: 3 inputs, 3 key-lengths, 3 value-lengths, 3 header-counts, 2 targets"
        );
        assert_eq!(
            unpack_error(|r| r.value_lengths[2] = 3),
            "output 2: its value of 3 bytes goes past the end of the 8 data bytes"
        );
        assert_eq!(unpack_error(|r| r.key_lengths[0] = -2), "output 0: its key length is -2");
        assert_eq!(unpack_error(|r| r.value_lengths[2] = 0), "1 bytes of data belong to no output");
        assert_eq!(unpack_error(|r| r.data[4] = 0xff), "output 0: a header name is not UTF-8");
        assert_eq!(
            unpack_error(|r| r.header_lengths.truncate(1)),
            "output 0: header-lengths ends before its headers do"
        );
        assert_eq!(
            unpack_error(|r| r.header_lengths.extend([0, 0])),
            "header-lengths has entries for headers no output has"
        );
        assert_eq!(unpack_error(|r| r.targets[2] = 1), "output 2: target 1 is not one of the 1 names");
        assert_eq!(unpack_error(|r| r.errors[0].input = 2), "input 2 has both outputs and an error");
        let order =
            "error 1 is for input 1: errors must be for inputs of the batch of 4, one at most per input, in order";
        assert_eq!(unpack_error(|r| r.errors.push(r.errors[0].clone())), order);
        let outside =
            "error 0 is for input 9: errors must be for inputs of the batch of 4, one at most per input, in order";
        assert_eq!(unpack_error(|r| r.errors[0].input = 9), outside);
    }
}
